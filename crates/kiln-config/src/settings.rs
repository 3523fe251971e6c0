//! The typed configuration of one image variant, read from its merged table.
//!
//! The fragment checks of [`crate::schema`] already rejected unknown fields
//! and wrong types; what is checked here is what only the merged result can
//! show: a missing `from`, a bootstrap option on a derived image, a file
//! entry with both `source` and `content`, a path that climbs out of its
//! folder.

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Origin};
use crate::schema::parse_mode;
use crate::source::Distribution;
use crate::value::{Kind, Table, Value};

/// Where an image starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A root bootstrapped from a distribution's packages.
    Bootstrap {
        /// The distribution.
        distribution: Distribution,
        /// Its suite (`bookworm`).
        suite: String,
        /// Which base set.
        variant: BootstrapVariant,
    },
    /// Another image of the tree.
    Image(String),
}

/// The base package sets of a bootstrap, as mmdebstrap names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BootstrapVariant {
    /// `Essential: yes` packages, `Priority: required` ones and apt.
    #[default]
    Minbase,
    /// `Essential: yes` packages only.
    Essential,
    /// `Priority: required` packages (and their dependencies).
    Required,
}

impl BootstrapVariant {
    /// Its name in `image.toml`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Minbase => "minbase",
            Self::Essential => "essential",
            Self::Required => "required",
        }
    }
}

/// A package to install, optionally pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRequest {
    /// Package name.
    pub name: String,
    /// Exact version from a `name=version` pin.
    pub version: Option<String>,
}

/// A path named in configuration, and the folder it is relative to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    /// The path as written (relative, `/`-separated, no `..`).
    pub path: String,
    /// Where it was written: its file decides what it is relative to (the
    /// image folder for `image.toml`, the tree root for `kiln.toml`).
    pub origin: Origin,
}

/// Where a single file's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    /// A file of the image folder or tree.
    Source(ConfigPath),
    /// Text written in the configuration.
    Inline(String),
}

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: String,
    /// Its content.
    pub content: FileContent,
    /// Permission bits (default 0644).
    pub mode: u32,
    /// Owner (default `root`).
    pub owner: String,
    /// Group (default `root`).
    pub group: String,
}

/// One entry of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Fixed uid.
    pub uid: Option<i64>,
    /// Primary group (default: a group named after the user).
    pub group: Option<String>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell.
    pub shell: Option<String>,
    /// Home folder.
    pub home: Option<String>,
    /// A crypt(3) password hash; never printed.
    pub password: Option<String>,
    /// `authorized_keys` lines.
    pub ssh_authorized_keys: Vec<String>,
    /// A system account.
    pub system: bool,
}

/// `services`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Services {
    /// Units to enable.
    pub enable: Vec<String>,
    /// Units to disable.
    pub disable: Vec<String>,
}

/// `container`: how an OCI image of the variant runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Container {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, besides a default `PATH`.
    pub env: BTreeMap<String, String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `User`.
    pub user: Option<String>,
}

/// `publish`: where `kiln publish` pushes the variant's artifacts. Not
/// part of its digest: where a layer goes is not what it is.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Publish {
    /// The registry and namespace (`127.0.0.1:5000/kiln`, `ghcr.io/org`).
    pub registry: Option<String>,
    /// The repository template under it (default `{image}`).
    pub repository: Option<String>,
    /// Tag templates (default `{keys}-{id}` and `{keys}-latest`).
    pub tags: Option<Vec<String>>,
    /// The id template (default `{time}`).
    pub id: Option<String>,
}

/// What a `run` step executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunBody {
    /// A script file.
    Script(ConfigPath),
    /// A shell snippet.
    Inline(String),
}

/// One `run` step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStep {
    /// Its name in logs.
    pub name: String,
    /// What it runs.
    pub body: RunBody,
    /// Whether it shares the host's network (`network = true`); by default
    /// a step has only a loopback interface.
    pub network: bool,
}

/// `cleanup`, with kiln's defaults for unset fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleanup {
    /// Remove apt lists and archives.
    pub apt: bool,
    /// Remove `/usr/share/doc`.
    pub docs: bool,
    /// Remove man pages.
    pub man: bool,
    /// Remove locales but `keep_locales`.
    pub locales: bool,
    /// Locales kept when `locales` is set.
    pub keep_locales: Vec<String>,
    /// Empty `/tmp` and `/var/tmp`.
    pub tmp: bool,
    /// Remove log files.
    pub logs: bool,
    /// Empty `/etc/machine-id`.
    pub machine_id: bool,
    /// Remove the SSH host keys (made again at first boot).
    pub ssh_host_keys: bool,
}

impl Default for Cleanup {
    fn default() -> Self {
        Self {
            apt: true,
            docs: false,
            man: false,
            locales: false,
            keep_locales: vec!["C.UTF-8".to_string()],
            tmp: true,
            logs: true,
            machine_id: true,
            ssh_host_keys: true,
        }
    }
}

pub use crate::output::OutputSpec;

/// The resolved configuration of one variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSettings {
    /// Where it starts.
    pub base: Base,
    /// Where `from` was written.
    pub from_origin: Origin,
    /// A description.
    pub description: Option<String>,
    /// Debian architecture.
    pub arch: String,
    /// Packages to install.
    pub packages: Vec<PackageRequest>,
    /// Packages to purge.
    pub remove: Vec<String>,
    /// A tree to copy into the root.
    pub rootfs: Option<ConfigPath>,
    /// Single files.
    pub files: Vec<FileSpec>,
    /// `/etc/hostname`.
    pub hostname: Option<String>,
    /// Accounts.
    pub users: Vec<UserSpec>,
    /// Units to enable or disable.
    pub services: Services,
    /// Scripts, in order.
    pub run: Vec<RunStep>,
    /// Environment for scripts.
    pub env: BTreeMap<String, String>,
    /// What to clean up.
    pub cleanup: Cleanup,
    /// Artifacts to write.
    pub outputs: Vec<OutputSpec>,
    /// Install a kernel and write it out.
    pub kernel: bool,
    /// Boot into RAM over HTTP: kiln's boot script in the initramfs
    /// ([`crate::netboot`]).
    pub netboot: bool,
    /// How an OCI image of it runs.
    pub container: Container,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
    /// How long the variant's build may take (`timeout = "20m"`); not part
    /// of its digest.
    pub timeout: Option<std::time::Duration>,
    /// Where `kiln publish` pushes it.
    pub publish: Publish,
    /// How `kiln test` boots and checks it; not part of its digest.
    pub test: Option<TestSpec>,
}

/// `[test]`: how `kiln test` boots a variant and what proves it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSpec {
    /// `bios`, `uefi`, `direct` or `netboot`.
    pub boot: String,
    /// How long the boot and the script may take.
    pub timeout: std::time::Duration,
    /// The console line that says the system is up.
    pub expect: Option<String>,
    /// A script run inside the booted guest (relative to the tree's
    /// root); its exit status is the verdict.
    pub script: Option<String>,
    /// The guest's memory (`2G`, `1024M`).
    pub memory: Option<String>,
    /// Where the table was written.
    pub origin: crate::Origin,
}

/// The time a `[test]` without a `timeout` may take.
pub const DEFAULT_TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The default architecture.
pub const DEFAULT_ARCH: &str = "amd64";

/// Reads the settings of a merged, interpolated table.
///
/// `image_file` is the image's `image.toml`, used to point at the image when
/// a required field is missing everywhere.
pub fn read_settings(
    t: &Table,
    image_file: FileId,
    diags: &mut Diagnostics,
) -> Option<ImageSettings> {
    let str_of = |k: &str| t.get(k).and_then(|e| e.value.as_str()).map(str::to_string);
    let list_of = |k: &str| -> Vec<String> {
        t.get(k)
            .and_then(|e| e.value.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = diags.reported();

    let Some(from) = t.get("from") else {
        diags.push(
            Diagnostic::at(&Origin { file: image_file, span: 0..0 }, "image has no `from`".to_string(), "")
                .with_help("set `from = \"debian:<suite>\"` to bootstrap, or `from = \"<image>\"` to build on another image"),
        );
        return None;
    };
    let from_text = from.value.as_str().unwrap_or_default();
    let variant_entry = t.get("variant");
    let variant = match variant_entry.and_then(|e| e.value.as_str()) {
        Some("essential") => BootstrapVariant::Essential,
        Some("required") => BootstrapVariant::Required,
        _ => BootstrapVariant::Minbase,
    };
    let base = match from_text.split_once(':') {
        Some((dist, suite)) => match Distribution::from_name(dist) {
            Some(distribution) if is_suite(suite) => Base::Bootstrap {
                distribution,
                suite: suite.to_string(),
                variant,
            },
            Some(_) => {
                diags.push(Diagnostic::at(
                    &from.value.origin,
                    format!("invalid suite `{suite}` in `from`"),
                    "expected a suite such as `bookworm`",
                ));
                return None;
            }
            None => {
                diags.push(
                    Diagnostic::at(
                        &from.value.origin,
                        format!("unknown distribution `{dist}` in `from`"),
                        "kiln bootstraps `debian:<suite>`",
                    )
                    .with_help("write `debian:<suite>`, or the name of another image of the tree"),
                );
                return None;
            }
        },
        None => {
            if let Some(e) = variant_entry {
                diags.push(
                    Diagnostic::at(&e.value.origin, "`variant` applies only to bootstrap images".to_string(), "not a `debian:` image")
                        .with_help(format!("`{from_text}` is another image of the tree; its own `variant` decides the base set")),
                );
            }
            Base::Image(from_text.to_string())
        }
    };

    let packages = t
        .get("packages")
        .and_then(|e| e.value.as_array())
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| match s.split_once('=') {
                    Some((n, v)) => PackageRequest {
                        name: n.to_string(),
                        version: Some(v.to_string()),
                    },
                    None => PackageRequest {
                        name: s.to_string(),
                        version: None,
                    },
                })
                .collect()
        })
        .unwrap_or_default();

    let rootfs = t.get("rootfs").and_then(|e| config_path(&e.value, diags));
    let files = t
        .get("files")
        .map(|e| read_files(&e.value, diags))
        .unwrap_or_default();
    let users = t
        .get("users")
        .map(|e| read_users(&e.value, diags))
        .unwrap_or_default();
    let services = t
        .get("services")
        .and_then(|e| e.value.as_table())
        .map(|s| Services {
            enable: strings(s.get("enable").map(|e| &e.value)),
            disable: strings(s.get("disable").map(|e| &e.value)),
        })
        .unwrap_or_default();
    let run = t
        .get("run")
        .map(|e| read_run(&e.value, diags))
        .unwrap_or_default();
    let cleanup = t
        .get("cleanup")
        .and_then(|e| e.value.as_table())
        .map(read_cleanup)
        .unwrap_or_default();
    let outputs = t
        .get("outputs")
        .map(|e| {
            let arch = str_of("arch").unwrap_or_else(|| DEFAULT_ARCH.to_string());
            crate::output::read_outputs(&e.value, &arch, diags)
        })
        .unwrap_or_default();

    let settings = ImageSettings {
        base,
        from_origin: from.value.origin.clone(),
        description: str_of("description"),
        arch: str_of("arch").unwrap_or_else(|| DEFAULT_ARCH.to_string()),
        packages,
        remove: list_of("remove"),
        rootfs,
        files,
        hostname: str_of("hostname"),
        users,
        services,
        run,
        env: string_map(t.get("env").map(|e| &e.value)),
        cleanup,
        outputs,
        kernel: t
            .get("kernel")
            .and_then(|e| e.value.as_bool())
            .unwrap_or(false),
        netboot: t
            .get("netboot")
            .and_then(|e| e.value.as_bool())
            .unwrap_or(false),
        container: t
            .get("container")
            .and_then(|e| e.value.as_table())
            .map(|c| Container {
                entrypoint: strings(c.get("entrypoint").map(|e| &e.value)),
                cmd: strings(c.get("cmd").map(|e| &e.value)),
                env: string_map(c.get("env").map(|e| &e.value)),
                workdir: c
                    .get("workdir")
                    .and_then(|e| e.value.as_str())
                    .map(str::to_string),
                user: c
                    .get("user")
                    .and_then(|e| e.value.as_str())
                    .map(str::to_string),
            })
            .unwrap_or_default(),
        labels: string_map(t.get("labels").map(|e| &e.value)),
        timeout: str_of("timeout").and_then(|t| crate::schema::parse_duration(&t)),
        publish: t
            .get("publish")
            .and_then(|e| e.value.as_table())
            .map(|p| {
                let text = |k: &str| p.get(k).and_then(|e| e.value.as_str()).map(str::to_string);
                Publish {
                    registry: text("registry"),
                    repository: text("repository"),
                    tags: p.get("tags").map(|e| strings(Some(&e.value))),
                    id: text("id"),
                }
            })
            .unwrap_or_default(),
        test: t.get("test").and_then(|e| {
            let table = e.value.as_table()?;
            let text = |k: &str| {
                table
                    .get(k)
                    .and_then(|e| e.value.as_str())
                    .map(str::to_string)
            };
            Some(TestSpec {
                boot: text("boot").unwrap_or_else(|| "direct".to_owned()),
                timeout: text("timeout")
                    .and_then(|t| crate::schema::parse_duration(&t))
                    .unwrap_or(DEFAULT_TEST_TIMEOUT),
                expect: text("expect"),
                script: text("script"),
                memory: text("memory"),
                origin: e.value.origin.clone(),
            })
        }),
    };
    if settings.netboot && !settings.kernel {
        if let Some(n) = t.get("netboot") {
            diags.push(
                Diagnostic::at(
                    &n.value.origin,
                    "a netboot image boots its own kernel and initrd, and this image has none",
                    "here",
                )
                .with_help(
                    "set `kernel = true` too: the initrd kiln builds carries the netboot script",
                ),
            );
        }
    }
    if !settings.kernel {
        let disks = t.get("outputs").and_then(|e| e.value.as_array());
        for item in disks.into_iter().flatten() {
            let name = item.as_str().or_else(|| {
                item.as_table()
                    .and_then(|t| t.get("format"))
                    .and_then(|f| f.value.as_str())
            });
            if let Some(name @ ("raw" | "qcow2" | "vhd" | "vmdk")) = name {
                diags.push(
                    Diagnostic::at(
                        &item.origin,
                        format!("a `{name}` disk boots a kernel, and this image has none"),
                        "this output",
                    )
                    .with_help("set `kernel = true`: kiln installs the architecture's `linux-image-*` and `initramfs-tools`, and the disk boots them"),
                );
            }
        }
    }
    if let Some(h) = t.get("hostname") {
        if !settings.hostname.as_deref().is_some_and(is_hostname) {
            diags.push(Diagnostic::at(
                &h.value.origin,
                "invalid hostname".to_string(),
                "use letters, digits and `-`, at most 63 characters a label",
            ));
        }
    }
    (diags.reported() == before).then_some(settings)
}

fn is_suite(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_table)
        .map(|t| {
            t.iter()
                .filter_map(|(k, e)| e.value.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A relative path inside its folder, or a diagnostic.
fn config_path(v: &Value, diags: &mut Diagnostics) -> Option<ConfigPath> {
    let s = v.as_str()?;
    let bad = s.is_empty() || s.starts_with('/') || s.split('/').any(|c| c == "..");
    if bad {
        diags.push(
            Diagnostic::at(&v.origin, format!("path `{s}` leaves its folder"), "must be relative, without `..`")
                .with_help("paths in image.toml are relative to the image folder; in kiln.toml, to the tree root"),
        );
        return None;
    }
    Some(ConfigPath {
        path: s.trim_start_matches("./").to_string(),
        origin: v.origin.clone(),
    })
}

fn absolute_image_path(v: &Value, diags: &mut Diagnostics) -> Option<String> {
    let s = v.as_str()?;
    if !s.starts_with('/') || s.split('/').any(|c| c == "..") || s == "/" {
        diags.push(Diagnostic::at(
            &v.origin,
            format!("`{s}` is not an absolute path in the image"),
            "write a path such as `/etc/motd`",
        ));
        return None;
    }
    Some(s.to_string())
}

fn read_files(v: &Value, diags: &mut Diagnostics) -> Vec<FileSpec> {
    let mut out = Vec::new();
    for item in v.as_array().unwrap_or_default() {
        let Some(t) = item.as_table() else { continue };
        let Some(path_entry) = t.get("path") else {
            diags.push(Diagnostic::at(
                &item.origin,
                "file entry without `path`".to_string(),
                "add `path = \"/...\"`",
            ));
            continue;
        };
        let Some(path) = absolute_image_path(&path_entry.value, diags) else {
            continue;
        };
        let content = match (t.get("source"), t.get("content")) {
            (Some(s), None) => match config_path(&s.value, diags) {
                Some(p) => FileContent::Source(p),
                None => continue,
            },
            (None, Some(c)) => {
                FileContent::Inline(c.value.as_str().unwrap_or_default().to_string())
            }
            (Some(s), Some(_)) => {
                diags.push(Diagnostic::at(
                    &s.key,
                    format!("file `{path}` has both `source` and `content`"),
                    "keep one",
                ));
                continue;
            }
            (None, None) => {
                diags.push(Diagnostic::at(
                    &item.origin,
                    format!("file `{path}` has neither `source` nor `content`"),
                    "add one",
                ));
                continue;
            }
        };
        let mode = match t.get("mode").map(|e| &e.value.kind) {
            Some(Kind::String(s)) => parse_mode(s).unwrap_or(0o644),
            Some(Kind::Integer(i)) => u32::try_from(*i).unwrap_or(0o644),
            _ => 0o644,
        };
        let text = |k: &str| {
            t.get(k)
                .and_then(|e| e.value.as_str())
                .unwrap_or("root")
                .to_string()
        };
        out.push(FileSpec {
            path,
            content,
            mode,
            owner: text("owner"),
            group: text("group"),
        });
    }
    out
}

fn read_users(v: &Value, diags: &mut Diagnostics) -> Vec<UserSpec> {
    let mut out = Vec::new();
    for item in v.as_array().unwrap_or_default() {
        let Some(t) = item.as_table() else { continue };
        let text = |k: &str| t.get(k).and_then(|e| e.value.as_str()).map(str::to_string);
        let Some(name) = text("name") else {
            diags.push(Diagnostic::at(
                &item.origin,
                "user without `name`".to_string(),
                "add `name = \"...\"`",
            ));
            continue;
        };
        let valid = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
        if !valid {
            let at = &t["name"].value.origin;
            diags.push(Diagnostic::at(
                at,
                format!("invalid user name `{name}`"),
                "use lower-case letters, digits, `_` and `-`",
            ));
            continue;
        }
        let password = text("password");
        if let Some(hash) = &password {
            // Never echo the value: it may be a real hash, or a password
            // typed where a hash belongs.
            if let Err(problem) = check_password_hash(hash) {
                diags.push(Diagnostic::at(
                    &t["password"].value.origin,
                    format!("invalid password hash for user `{name}`: {problem}"),
                    "give a crypt(3) hash (e.g. from `mkpasswd -m yescrypt`), `!` for a locked password or \"\" for none",
                ));
                continue;
            }
        }
        out.push(UserSpec {
            name,
            uid: t.get("uid").and_then(|e| e.value.as_integer()),
            group: text("group"),
            groups: strings(t.get("groups").map(|e| &e.value)),
            shell: text("shell"),
            home: text("home"),
            password,
            ssh_authorized_keys: strings(t.get("ssh_authorized_keys").map(|e| &e.value)),
            system: t
                .get("system")
                .and_then(|e| e.value.as_bool())
                .unwrap_or(false),
        });
    }
    out
}

/// Whether `hash` can stand in `/etc/shadow`'s password field as a crypt(3)
/// hash: `$id$…` (yescrypt, SHA-512, …), a 13-character DES hash, empty
/// (no password), or starting with `!`/`*` (locked). Anything else is most
/// likely a password where its hash belongs.
fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    if hash.contains([':', '\n', '\r']) {
        return Err("a hash cannot hold `:` or a line break");
    }
    if hash.chars().any(char::is_whitespace) {
        return Err("a hash cannot hold white space");
    }
    let des = hash.len() == 13
        && hash
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '/');
    let modular = hash.len() > 3 && hash.starts_with('$') && hash[1..].contains('$');
    if hash.is_empty() || hash.starts_with(['!', '*']) || des || modular {
        Ok(())
    } else {
        Err("this is not a crypt(3) hash; kiln takes the hash, not the password")
    }
}

fn read_run(v: &Value, diags: &mut Diagnostics) -> Vec<RunStep> {
    let mut out = Vec::new();
    for (i, item) in v.as_array().unwrap_or_default().iter().enumerate() {
        match &item.kind {
            Kind::String(_) => {
                if let Some(p) = config_path(item, diags) {
                    out.push(RunStep {
                        name: p.path.clone(),
                        body: RunBody::Script(p),
                        network: false,
                    });
                }
            }
            Kind::Table(t) => {
                let name = t
                    .get("name")
                    .and_then(|e| e.value.as_str())
                    .map(str::to_string);
                let body = match (t.get("script"), t.get("inline")) {
                    (Some(s), None) => config_path(&s.value, diags).map(RunBody::Script),
                    (None, Some(c)) => Some(RunBody::Inline(
                        c.value.as_str().unwrap_or_default().to_string(),
                    )),
                    (Some(s), Some(_)) => {
                        diags.push(Diagnostic::at(
                            &s.key,
                            "run step has both `script` and `inline`".to_string(),
                            "keep one",
                        ));
                        None
                    }
                    (None, None) => {
                        diags.push(Diagnostic::at(
                            &item.origin,
                            "run step has neither `script` nor `inline`".to_string(),
                            "add one",
                        ));
                        None
                    }
                };
                if let Some(body) = body {
                    let name = name.unwrap_or_else(|| match &body {
                        RunBody::Script(p) => p.path.clone(),
                        RunBody::Inline(_) => format!("inline-{}", i + 1),
                    });
                    let network = t
                        .get("network")
                        .and_then(|e| e.value.as_bool())
                        .unwrap_or(false);
                    out.push(RunStep {
                        name,
                        body,
                        network,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn read_cleanup(t: &Table) -> Cleanup {
    let d = Cleanup::default();
    let flag = |k: &str, default: bool| t.get(k).and_then(|e| e.value.as_bool()).unwrap_or(default);
    Cleanup {
        apt: flag("apt", d.apt),
        docs: flag("docs", d.docs),
        man: flag("man", d.man),
        locales: flag("locales", d.locales),
        keep_locales: t
            .get("keep_locales")
            .map_or(d.keep_locales, |e| strings(Some(&e.value))),
        tmp: flag("tmp", d.tmp),
        logs: flag("logs", d.logs),
        machine_id: flag("machine_id", d.machine_id),
        ssh_host_keys: flag("ssh_host_keys", d.ssh_host_keys),
    }
}
