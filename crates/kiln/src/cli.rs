//! Command-line arguments (stage one of two: raw flags; `settings` resolves
//! them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "kiln builds OS images from a tree of declarative definitions.";

const LONG_ABOUT: &str = "\
kiln builds OS images from a tree of declarative definitions.

A tree is a folder with a `kiln.toml` at its root (package sources, defaults,
the variant matrix, output settings) and one folder per image below it, each
holding an `image.toml`. An image starts `from` a distribution bootstrap
(`debian:bookworm`) or from another image of the tree, and the matrix
(`[dimensions]`) multiplies images into variants: one per combination of keys.

Start with `kiln init mytree && kiln plan mytree`.";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a build failed
  2  usage or configuration error (nothing was changed)";

/// The `kiln` command line.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// When to use colours.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
}

/// When to use colours.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ColorChoice {
    /// When writing to a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the variants a build would produce, in build order
    ///
    /// Expands every image over the variant matrix, links each variant to the
    /// one it builds on and computes its input digest: a hash of its resolved
    /// configuration, the files of its image folder and its parent's digest.
    /// A variant is rebuilt exactly when its digest changes.
    ///
    /// Examples:
    ///   kiln plan                      the tree in the current folder
    ///   kiln plan mytree --only app    variants of `app` (and what they build on)
    ///   kiln plan --only bookworm uefi bookworm variants that also hold `uefi`
    ///   kiln plan --skip trixie --json machine-readable, without trixie
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Plan(PlanArgs),

    /// Build the selected variants.
    ///
    /// Bootstrap variants (`from = "debian:<suite>"`) are assembled from the
    /// Debian archive: the `InRelease` signature is verified against the
    /// source's keyring, package indexes and .debs are checked against their
    /// SHA256 and cached (shared by every build on the machine), the
    /// packages are unpacked into a fresh root and configured there with the
    /// root's own dpkg. The result is `OUT/<variant>/rootfs/`; an earlier
    /// result is replaced only once the new one is complete.
    ///
    /// The exact packages of each variant are recorded in `kiln.lock` at the
    /// tree root. A build reuses a variant's locked packages while they still
    /// satisfy its configuration; `kiln lock` refreshes them; `--locked`
    /// installs exactly the lock or fails.
    ///
    /// Examples:
    ///   kiln build                        every variant of the tree here
    ///   kiln build mytree --only bookworm the bookworm variants
    ///   kiln build --offline              from the cache, no network
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Build(BuildArgs),

    /// Run the build service: webhooks in, builds, commit statuses out.
    ///
    /// Listens (default 127.0.0.1:8470) for signed push webhooks from GitHub
    /// (`POST /hooks/github`) or Gitea/Forgejo (`POST /hooks/gitea`), records
    /// each push to a tracked branch as a job in SQLite before answering 202,
    /// builds it with the same engine as `kiln build` against one shared
    /// layer store (only what changed is rebuilt), and reports a commit
    /// status. Jobs, logs, live events (SSE) and artifacts are served at
    /// `/api/jobs`, `/api/jobs/ID/log`, `/api/jobs/ID/events`, `/artifacts/`.
    /// SIGTERM drains: nothing new starts; running builds are cancelled and
    /// run again at the next start (`shutdown = "cancel"`) or finished
    /// (`"wait"`).
    ///
    /// Examples:
    ///   kiln serve --config /etc/kiln/serve.toml
    ///   kiln serve token create ci --config serve.toml   a token for the write API
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Serve(ServeArgs),

    /// Resolve every bootstrap variant's packages again and rewrite `kiln.lock`.
    ///
    /// Fetches the current package indexes (verified), resolves each
    /// variant's package set and records name, version, architecture, SHA256
    /// and suite. Downloads no packages.
    #[command(after_help = EXIT_CODES)]
    Lock(LockArgs),

    /// Inspect and tidy the layer store.
    #[command(subcommand, after_help = EXIT_CODES)]
    Store(StoreCommand),

    /// Write a small working example tree: a base image and a child, over two suites.
    ///
    /// The tree uses the host's apt sources, so it plans and builds on a Debian
    /// machine as it is. Refuses to overwrite an existing `kiln.toml`.
    #[command(after_help = EXIT_CODES)]
    Init(InitArgs),

    /// Show what a variant or an artifact is made of
    ///
    /// Reads `OUT/manifest.json` and the store: the manifest entry (keys,
    /// digests, artifacts with their revisions and SHA-256), the chain of
    /// layers it stands on with their sizes, and the largest packages and
    /// directories of its root.
    ///
    /// TARGET is a variant name, an artifact name (`app-bookworm-r2.squashfs`)
    /// or the path of an artifact file (matched by its SHA-256).
    ///
    /// Examples:
    ///   kiln inspect app-bookworm              a variant of the tree here
    ///   kiln inspect out/app-bookworm/app-bookworm-r0.squashfs
    ///   kiln inspect base-bookworm mytree --json
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Inspect(InspectArgs),

    /// Read a `ThreeFold` flist back (list it, print a file of it) or clean its block store.
    ///
    /// Blocks are read from a directory store (`--store`, else the first
    /// `dir://` route the flist records, relative to the current folder
    /// when it is relative, as rfs reads it), each checked against its id
    /// and key before it is decrypted.
    ///
    /// Examples:
    ///   kiln flist ls out/vm/vm-r0.flist
    ///   kiln flist cat out/vm/vm-r0.flist /etc/os-release
    ///   kiln flist cat vm-r0.flist /usr/bin/busybox --store out/flist-store > busybox
    ///   kiln flist gc --dry-run out/*/*.flist
    #[command(subcommand, after_help = EXIT_CODES, verbatim_doc_comment)]
    Flist(FlistCommand),

    /// Push the selected variants' artifacts to an OCI registry.
    ///
    /// Builds what is missing first, then pushes, per variant: its `oci`
    /// output as a runnable image, and every other artifact (disks,
    /// squashfs, ext4, tar, cpio, flist, kernel + initrd) as an OCI artifact
    /// (`artifactType` `application/vnd.kiln.<format>.v1`, one layer per
    /// file), each annotated with its variant, keys, input digest, id,
    /// revision and the tree's git commit; its manifest.json entry and SPDX
    /// SBOM are attached as referrers. Where: `[publish]` in kiln.toml or an
    /// image.toml (`registry`, `repository = "{image}"`,
    /// `tags = ["{keys}-{id}", "{keys}-latest"]`, `id = "{time}"`);
    /// artifacts' tags end in `.<format>`.
    ///
    /// A variant whose newest published revision has the same layer key is
    /// up to date and pushes nothing; otherwise it gets the next revision
    /// and a new id, which must differ from the last, sort after it and not
    /// be taken. Blobs the registry has are never sent again.
    ///
    /// Credentials: `KILN_REGISTRY_USER` and `KILN_REGISTRY_PASSWORD`, else
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (`auths`).
    /// `KILN_NOW` (RFC 3339) replaces the clock, for tests.
    ///
    /// Examples:
    ///   kiln publish                                   the tree here, to its [publish] registry
    ///   kiln publish --only bookworm --dry-run         what would be pushed, and what is there
    ///   kiln publish --registry 127.0.0.1:5000/kiln --plain-http
    ///   kiln publish --revise --only base              a new revision of an unchanged variant
    #[command(after_help = PUBLISH_EXIT_CODES, verbatim_doc_comment)]
    Publish(PublishArgs),

    /// List what the tree's variants published: ids, revisions, tags, digests, sizes, lifecycle.
    ///
    /// Reads every repository the tree publishes to (from `[publish]`)
    /// and shows each kiln image there with its lifecycle state (active,
    /// permanent, obsolete with its deletion date) and last use.
    ///
    /// Examples:
    ///   kiln images
    ///   kiln images mytree --json
    #[command(after_help = PUBLISH_EXIT_CODES, verbatim_doc_comment)]
    Images(ImagesArgs),

    /// Record uses, keep images, mark unused ones obsolete, prune them.
    ///
    /// State is kept in the registry, as small referrer artifacts on each
    /// image, so every machine sees it. Rules: `obsolete` never marks a
    /// permanent image or the newest revision of a variant, and marks
    /// nothing when more than `--max` would qualify; `prune` deletes only
    /// images whose deletion date has passed, never permanent ones, and
    /// leaves blobs to the registry's garbage collection
    /// (`registry garbage-collect` for docker-registry).
    ///
    /// Examples:
    ///   kiln lifecycle used 127.0.0.1:5000/kiln/base:bookworm-latest
    ///   kiln lifecycle permanent 127.0.0.1:5000/kiln/base:bookworm-20261207t100405z
    ///   kiln lifecycle obsolete --older-than 30d --unused-for 30d --dry-run
    ///   kiln lifecycle prune --dry-run
    #[command(subcommand, after_help = PUBLISH_EXIT_CODES, verbatim_doc_comment)]
    Lifecycle(LifecycleCommand),

    /// Serve the built artifacts for network boot: files and iPXE scripts.
    ///
    /// Serves the tree's output folder over HTTP (range requests included)
    /// at `/boot/files/`, and writes one iPXE script per bootable variant:
    /// `/boot/VARIANT.ipxe` boots a netboot variant (`netboot = true`, or an
    /// overlay over one) with its base's kernel and initrd and a command
    /// line naming the squashfs and overlays with their SHA-256s, which the
    /// initrd fetches, checks and mounts in RAM; a variant with a raw disk
    /// is booted with iPXE's `sanboot`. `/boot/menu.ipxe` lists them all.
    /// The manifest is read at each request: a new build is served at once.
    ///
    /// Point a DHCP server's boot file (or iPXE's `chain`) at
    /// `http://HOST:8471/boot/menu.ipxe`. The scripts' URLs use the host
    /// the client asked for, or `--url`.
    ///
    /// Examples:
    ///   kiln boot-server                        the tree here, on 127.0.0.1:8471
    ///   kiln boot-server mytree --listen 0.0.0.0:8471 --url http://10.0.0.5:8471
    ///   curl http://127.0.0.1:8471/boot/web.ipxe
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    #[allow(clippy::doc_markdown)]
    BootServer(BootServerArgs),

    /// Boot a variant in QEMU, its serial console on this terminal.
    ///
    /// Boots what the variant's last build wrote: its qcow2 or raw disk
    /// (SeaBIOS, or OVMF with `--firmware uefi`; opened with
    /// `snapshot=on`, so the artifact is never written); else a netboot
    /// variant through a boot server kiln starts on loopback and QEMU's
    /// iPXE (the initrd fetches the squashfs and overlays over HTTP and
    /// checks them); else its kernel and initrd handed to QEMU directly
    /// with its ext4 output as /dev/vda, as micro-VM monitors boot.
    /// `--netboot` and `--direct` choose. KVM when /dev/kvm works, TCG
    /// otherwise (slow).
    /// QEMU's user network is `restrict=on`: the guest reaches the boot
    /// server and nothing else. Quit with Ctrl-A X.
    ///
    /// Examples:
    ///   kiln boot web examples/netboot         netboot into RAM over HTTP
    ///   kiln boot vm-bookworm-uefi examples/cloud --firmware uefi
    ///   kiln boot kvm examples/microvm           kernel + initrd + ext4 root
    ///   kiln boot vm examples/cloud -- -display gtk   more QEMU arguments
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    #[allow(clippy::doc_markdown)]
    Boot(BootArgs),

    /// Boot the selected variants headless and check that they work.
    ///
    /// Builds what is missing first. Each variant with a `[test]` table is
    /// booted as it says (`boot = "netboot" | "bios" | "uefi"`), kiln
    /// waits for its `expect` line on the console, then for its `script`
    /// (a file of the tree, run inside the guest once `multi-user.target`
    /// is reached; its exit status is the verdict), all within `timeout`
    /// (default 5m). The results go into each variant's manifest entry;
    /// a failure shows the console's last lines.
    ///
    ///   [test]
    ///   boot = "netboot"
    ///   expect = "kiln-netboot-web: root on overlay"
    ///   script = "tests/web.sh"
    ///   timeout = "4m"
    ///
    /// Examples:
    ///   kiln test examples/netboot             every variant with a [test]
    ///   kiln test --only web --json            machine-readable
    ///   kiln test --parallel 2                 two guests at once
    #[command(after_help = TEST_EXIT_CODES, verbatim_doc_comment)]
    Test(TestArgs),

    /// Copy stdin to a TCP connection and the connection to stdout: what
    /// QEMU's `guestfwd=...-cmd:` runs per guest connection to reach a
    /// server on loopback.
    #[command(hide = true, name = "connect-stdio")]
    ConnectStdio {
        /// The address to connect to.
        addr: std::net::SocketAddr,
    },
}

const TEST_EXIT_CODES: &str = "\
Exit codes:
  0  every test passed
  1  a test failed or timed out, or the build failed
  2  bad usage or configuration (no variant has a [test], a script is missing)
  130  interrupted";

/// `kiln boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The variant to boot.
    pub variant: String,

    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The firmware for a disk [default: uefi for a UEFI-only disk, else bios].
    #[arg(long, value_enum, value_name = "FIRMWARE")]
    pub firmware: Option<FirmwareArg>,

    /// Boot over the network through a boot server on loopback (the
    /// default for a netboot variant without a disk).
    #[arg(long, conflicts_with = "direct")]
    pub netboot: bool,

    /// Hand the kernel and initrd to QEMU directly, with the `ext4` output
    /// as the root disk (`/dev/vda`), as micro-VM monitors boot (the
    /// default for a variant with a kernel and no disk); a netboot
    /// variant's initrd fetches the rest from a boot server on loopback.
    #[arg(long)]
    pub direct: bool,

    /// The guest's memory.
    #[arg(long, default_value = "2G", value_name = "SIZE")]
    pub memory: String,

    /// The guest's processors.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub cpus: u32,

    /// More QEMU arguments, after `--`.
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

/// A firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareArg {
    /// `SeaBIOS`.
    Bios,
    /// OVMF.
    Uefi,
}

/// `kiln test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub fetch: FetchArgs,

    /// How many guests run at once.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,

    /// Print JSON: `{"tests": [...], "passed": N, "failed": N}`.
    #[arg(long)]
    pub json: bool,

    /// How the build shows progress on stderr (as `kiln build --progress`).
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "MODE")]
    pub progress: Progress,
}

/// `kiln boot-server`.
#[derive(Debug, Args)]
pub struct BootServerArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Where to listen (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:8471", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// The URL clients reach this server at, for the scripts [default: the
    /// request's Host].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Console arguments for the kernel command line.
    #[arg(long, default_value = kiln_boot::server::DEFAULT_CONSOLE, value_name = "ARGS")]
    pub console: String,

    /// More kernel arguments (e.g. `kiln.on_fail=reboot kiln.syslog=10.0.0.5`).
    #[arg(long, default_value = "", value_name = "ARGS")]
    pub cmdline: String,
}

const PUBLISH_EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a build or a registry request failed
  2  usage, configuration, an id rule or a lifecycle rule refused (nothing was pushed)";

/// How to reach a registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Publish every variant here (`127.0.0.1:5000/kiln`, `ghcr.io/org`),
    /// over `[publish] registry`.
    #[arg(long, value_name = "HOST/NAMESPACE")]
    pub registry: Option<String>,

    /// Speak plain HTTP; only for a registry on this machine.
    #[arg(long)]
    pub plain_http: bool,

    /// Trust these CA certificates (PEM) besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// `kiln publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub fetch: FetchArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Check ids and tags and list what would be pushed and what is up to
    /// date; push nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Publish a new revision even of variants whose inputs did not change.
    #[arg(long)]
    pub revise: bool,

    /// Blobs larger than this go up in chunks of this size (a failed chunk
    /// is resumed, not the whole blob); lower it for registries or proxies
    /// that limit a request's size.
    #[arg(long, default_value = "64M", value_parser = parse_chunk_size, value_name = "SIZE")]
    pub chunk_size: u64,

    /// Print JSON: `{"units": [...], "blobs_uploaded": N, ...}`.
    #[arg(long)]
    pub json: bool,

    /// How the build shows progress on stderr (as `kiln build --progress`).
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "MODE")]
    pub progress: Progress,
}

/// `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln lifecycle`.
#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Record that images were used now (CI jobs and `kiln serve` call it).
    Used(RefsArgs),
    /// Keep images forever (`--unset` to undo): never obsoleted or pruned.
    Permanent(PermanentArgs),
    /// Mark old, unused images obsolete with a deletion date.
    Obsolete(ObsoleteArgs),
    /// Delete obsolete images whose deletion date has passed.
    Prune(PruneArgs),
}

/// Image references.
#[derive(Debug, Args)]
pub struct RefsArgs {
    /// `host/repository:tag` or `host/repository@sha256:…`.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `kiln lifecycle permanent`.
#[derive(Debug, Args)]
pub struct PermanentArgs {
    #[command(flatten)]
    pub refs: RefsArgs,

    /// Undo: the images age like any other again.
    #[arg(long)]
    pub unset: bool,
}

/// `kiln lifecycle obsolete`.
#[derive(Debug, Args)]
pub struct ObsoleteArgs {
    /// The tree's root folder (its `[publish]` repositories are read).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Only images published longer ago than this.
    #[arg(long, default_value = "30d", value_parser = parse_age, value_name = "DURATION")]
    pub older_than: std::time::Duration,

    /// Only images not used for this long.
    #[arg(long, default_value = "30d", value_parser = parse_age, value_name = "DURATION")]
    pub unused_for: std::time::Duration,

    /// How long after marking `prune` may delete them.
    #[arg(long, default_value = "30d", value_parser = parse_age, value_name = "DURATION")]
    pub grace: std::time::Duration,

    /// Mark at most this many; when more qualify, mark none and say so.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max: usize,

    /// List, mark nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln lifecycle prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The tree's root folder (its `[publish]` repositories are read).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// List, delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln flist`.
#[derive(Debug, Subcommand)]
pub enum FlistCommand {
    /// List every entry: mode, owner, size, date, path (and link target).
    Ls(FlistLsArgs),
    /// Write one regular file's content to stdout.
    Cat(FlistCatArgs),
    /// Remove the blocks of a directory store that none of the given
    /// flists names.
    ///
    /// Every build adds the blocks of its flists to the store; blocks of
    /// old revisions stay. Name every flist whose blocks must stay (e.g.
    /// `kiln flist gc out/*/*.flist`); the rest are removed, and so are
    /// writers' leftover temporary files. Waits for builds writing to the
    /// store. Try `--dry-run` first.
    Gc(FlistGcArgs),
}

/// `kiln flist gc`.
#[derive(Debug, Args)]
pub struct FlistGcArgs {
    /// The flists whose blocks are kept.
    #[arg(required = true, value_name = "FLIST")]
    pub flists: Vec<PathBuf>,
    /// The directory store (default: the flists' own `dir://` route, which
    /// must be the same for all).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln flist ls`.
#[derive(Debug, Args)]
pub struct FlistLsArgs {
    /// The flist file.
    pub flist: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln flist cat`.
#[derive(Debug, Args)]
pub struct FlistCatArgs {
    /// The flist file.
    pub flist: PathBuf,
    /// The file's path in the flist (`/etc/os-release`).
    pub path: String,
    /// The directory store holding the blocks (default: the flist's own
    /// `dir://` route).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// Which variants to act on.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Keep only variants of these images, or holding these dimension keys.
    ///
    /// Keys of one dimension are alternatives (`--only bookworm trixie`);
    /// keys of different dimensions must all be held (`--only bookworm uefi`).
    /// Ancestors of kept variants are always planned.
    #[arg(long, num_args = 1.., value_name = "IMAGE|KEY")]
    pub only: Vec<String>,

    /// Leave out variants of these images or holding any of these keys, and
    /// everything built on them.
    #[arg(long, num_args = 1.., value_name = "IMAGE|KEY")]
    pub skip: Vec<String>,
}

/// `kiln plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    /// Print JSON: {"variants":[{"name","image","keys","parent","digest","action"}]}
    /// (the same as `--format json`).
    #[arg(long)]
    pub json: bool,

    /// What to print: `table` (and the parent tree), `json`,
    /// `github-matrix` (one line of JSON for GitHub Actions' `fromJSON`:
    /// `{"include": [...], "stages": [{"include": [...]}, ...]}`, one entry
    /// per variant to build with `only` = the `--only` words that select
    /// it, parents in earlier stages than their children) or `markdown` (a
    /// table of variants, actions and digests for a pull-request comment).
    #[arg(long, value_enum, default_value_t = PlanFormat::Table, value_name = "FORMAT")]
    pub format: PlanFormat,

    /// The cache holding the layer store (see `kiln build --help`); a variant
    /// whose layer is there is `cached`.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `kiln plan --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table and the parent tree.
    Table,
    /// JSON.
    Json,
    /// A GitHub Actions matrix.
    GithubMatrix,
    /// A Markdown table.
    Markdown,
}

/// Where packages come from and are cached.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The shared package cache [default: `[cache] dir` of kiln.toml, else
    /// `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Make no network requests: use only indexes and packages an earlier
    /// run verified and cached.
    #[arg(long)]
    pub offline: bool,
}

/// `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub fetch: FetchArgs,

    /// Install exactly what `kiln.lock` records; fail if it is missing or
    /// no longer matches the configuration.
    #[arg(long)]
    pub locked: bool,

    /// Packages unpacked in parallel within one variant.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub jobs: usize,

    /// Variants built at once (independent ones: a variant waits for its
    /// parent).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,

    /// Rebuild the selected variants even if their layers are in the store.
    #[arg(long)]
    pub revise: bool,

    /// Print the manifest (`OUT/manifest.json`) as JSON instead of the
    /// summary.
    #[arg(long)]
    pub json: bool,

    /// How to show progress on stderr: `tty` (a line per running variant,
    /// redrawn), `plain` (one line per step, for CI logs), `json` (one
    /// JSON object per build event per line, schema version 1: see the
    /// README), or `auto` (`tty` on a terminal, else `plain`).
    #[arg(long, value_enum, default_value_t = Progress::Auto, value_name = "MODE")]
    pub progress: Progress,

    /// Stop the build after this long (`90s`, `45m`, `1h30m`): running
    /// scripts are killed, nothing half-built enters the store, and the
    /// report names the variant and step that ran out of time (exit 1).
    /// Each variant may also set its own `timeout` in image.toml/kiln.toml.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

/// How `kiln build` shows progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// `tty` on a terminal, else `plain`.
    Auto,
    /// Redrawn lines, one per running variant.
    Tty,
    /// One line per step.
    Plain,
    /// One JSON object per event per line.
    Json,
}

fn parse_chunk_size(s: &str) -> Result<u64, String> {
    kiln_config::output::parse_size(s)
        .filter(|&n| n >= 1 << 20)
        .ok_or_else(|| format!("`{s}` is not a size of at least 1M such as `16M` or `1G`"))
}

/// A duration that may count days (`30d`) or weeks (`2w`).
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    for (unit, secs) in [('d', 86_400u64), ('w', 7 * 86_400)] {
        if let Some(n) = t.strip_suffix(unit).and_then(|n| n.parse::<u64>().ok()) {
            return Ok(std::time::Duration::from_secs(n * secs));
        }
    }
    parse_duration(s)
        .map_err(|_| format!("`{s}` is not a duration such as `30d`, `2w`, `12h` or `90m`"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kiln_config::schema::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration such as `90s`, `45m` or `1h30m`"))
}

/// `kiln serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service's configuration (see the README's `kiln serve`).
    #[arg(long, value_name = "FILE", default_value = "serve.toml", global = true)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<ServeCommand>,
}

/// `kiln serve ...`.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `kiln serve token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token for the write API; it is printed once, only its hash
    /// is stored.
    Create {
        /// What the token is for (`ci`, `alice`).
        name: String,
    },
}

/// `kiln lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// `kiln store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Size of each layer, what it shares through its parent chain, and the
    /// store's total against what full copies of every root would take.
    Du(StoreArgs),
    /// Remove layers no current plan of the tree references, oldest first,
    /// never one in use or one a kept layer builds on.
    Gc(GcArgs),
    /// Re-hash every layer and compare with its recorded content digest.
    Verify(StoreArgs),
}

/// Arguments every `kiln store` command takes.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// A tree whose current plan decides which layers are referenced.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The cache holding the store [default: as for `kiln build`].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln store gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Keep the N most recent unreferenced layers.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,

    /// Remove unreferenced layers, oldest first, until the store takes at
    /// most SIZE (`500M`, `20G`).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    kiln_config::output::parse_size(s)
        .ok_or_else(|| format!("`{s}` is not a size such as 500M or 20G"))
}

/// `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A variant, an artifact's name or an artifact file.
    pub target: String,

    /// The tree's root folder (holding kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The cache holding the store [default: as for `kiln build`].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// How many packages and directories to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the tree (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}
