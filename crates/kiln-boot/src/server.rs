//! The boot server: a tree's output folder over HTTP (range requests, so
//! iPXE's `sanboot` and resumed downloads work) and one generated iPXE
//! script per bootable variant.
//!
//! - `GET /boot/menu.ipxe`: a menu of every bootable variant;
//! - `GET /boot/{variant}.ipxe`: a netboot variant's kernel, initrd and
//!   command line (the manifest's, with `kiln.url=` and the console
//!   added), or `sanboot` of a variant's raw disk;
//! - `GET /boot/files/{path}`: the output folder.
//!
//! The manifest is read at each request, so a new build is served at once.
//! URLs in the scripts start with the request's `Host` (what iPXE asked
//! for), unless the server was given a public URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kiln_build::manifest::{Manifest, VariantEntry};
use tower::ServiceExt as _;

use crate::error::Error;

/// An HTTP error: its status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The console arguments a boot script adds to the kernel command line
/// when none are given: the screen and the first serial port (the last
/// one named is `/dev/console`).
pub const DEFAULT_CONSOLE: &str = "console=tty0 console=ttyS0,115200";

/// What a boot server serves and how its scripts address it.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The output folder (with `manifest.json`).
    pub out_dir: PathBuf,
    /// The URL the scripts use for the server (`http://host:port`); `None`:
    /// the request's `Host`.
    pub public_url: Option<String>,
    /// Console arguments for the kernel command line.
    pub console: String,
    /// More kernel arguments, after the manifest's.
    pub extra_cmdline: String,
    /// Overlays applied after a netboot variant's own (served from
    /// `extra_dir` at `/boot/extra/NAME`): `kiln test` adds its script so.
    pub extra_overlays: Vec<ExtraOverlay>,
    /// `user:password` put into every URL of the scripts (`http://user:password@host/...`),
    /// which iPXE and busybox's `wget` send as HTTP Basic authentication:
    /// for a server that needs it (`kiln serve` with `public = false`).
    pub credentials: Option<String>,
    /// The folder `/boot/extra/` serves.
    pub extra_dir: Option<PathBuf>,
}

/// An overlay a boot server adds to every netboot variant.
#[derive(Debug, Clone)]
pub struct ExtraOverlay {
    /// Its file name in [`BootOptions::extra_dir`].
    pub name: String,
    /// Its SHA-256.
    pub sha256: String,
}

impl BootOptions {
    /// Serving `out_dir`, addressed by the request's host, with the
    /// default console.
    #[must_use]
    pub fn new(out_dir: PathBuf) -> BootOptions {
        BootOptions {
            out_dir,
            public_url: None,
            console: DEFAULT_CONSOLE.to_owned(),
            extra_cmdline: String::new(),
            extra_overlays: Vec::new(),
            credentials: None,
            extra_dir: None,
        }
    }
}

/// How a variant boots from the boot server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootable {
    /// Its base's kernel and initrd, fetching the squashfs and overlays.
    Netboot,
    /// Its raw disk, with iPXE's `sanboot` over HTTP.
    Disk(String),
}

/// How `entry` boots from a boot server, if it does.
#[must_use]
pub fn bootable(entry: &VariantEntry) -> Option<Bootable> {
    if entry.netboot.is_some() {
        return Some(Bootable::Netboot);
    }
    entry
        .artifacts
        .iter()
        .find(|a| a.format == "raw")
        .map(|a| Bootable::Disk(a.path.clone()))
}

/// The kernel command line of a netboot variant whose boot root is at
/// `url` (`http://host:port/boot`, no trailing `/`): the base and overlays of its manifest entry, with
/// their SHA-256s, relative to `kiln.url=` (where the output folder is
/// served), then the `options`' own overlays, console and arguments.
#[must_use]
pub fn netboot_cmdline(entry: &VariantEntry, url: &str, options: &BootOptions) -> Option<String> {
    let n = entry.netboot.as_ref()?;
    let extra: Vec<(String, &str)> = options
        .extra_overlays
        .iter()
        .map(|o| (format!("{url}/extra/{}", o.name), o.sha256.as_str()))
        .collect();
    let overlays = n
        .overlays
        .iter()
        .map(|o| (o.path.as_str(), o.sha256.as_str()))
        .chain(extra.iter().map(|(name, sha)| (name.as_str(), *sha)));
    let mut line = format!(
        "{} kiln.url={url}/files",
        kiln_build::manifest::netboot_cmdline(&n.base, overlays)
    );
    for part in [&options.console, &options.extra_cmdline] {
        if !part.trim().is_empty() {
            line.push(' ');
            line.push_str(part.trim());
        }
    }
    Some(line)
}

/// The iPXE script of `entry`, for a boot root at `url` (no trailing
/// `/`).
#[must_use]
pub fn ipxe_script(entry: &VariantEntry, url: &str, options: &BootOptions) -> Option<String> {
    let files = format!("{url}/files");
    match bootable(entry)? {
        Bootable::Netboot => {
            let n = entry.netboot.as_ref()?;
            // BOOTIF tells the initrd which interface iPXE booted from.
            let cmdline = format!(
                "{} BOOTIF=01-${{netX/mac:hexhyp}}",
                netboot_cmdline(entry, url, options)?
            );
            Some(format!(
                "#!ipxe\n\
                 # kiln: {variant} boots {base}'s kernel; its initrd fetches the squashfs and {count} overlay(s) over HTTP and checks their SHA-256.\n\
                 echo kiln: booting {variant}\n\
                 kernel {files}/{kernel} initrd=initrd.img {cmdline}\n\
                 initrd --name initrd.img {files}/{initrd}\n\
                 boot\n",
                variant = entry.variant,
                base = n.base_variant,
                count = n.overlays.len(),
                kernel = n.kernel,
                initrd = n.initrd,
            ))
        }
        Bootable::Disk(path) => Some(format!(
            "#!ipxe\n\
             # kiln: {variant}'s raw disk, booted over HTTP (range requests).\n\
             echo kiln: booting {variant} from its disk\n\
             sanboot --no-describe {files}/{path}\n",
            variant = entry.variant,
        )),
    }
}

/// `menu.ipxe`: every bootable variant of `manifest`, for a boot root at
/// `url`.
#[must_use]
pub fn ipxe_menu(manifest: &Manifest, url: &str) -> String {
    let listed: Vec<&VariantEntry> = manifest
        .variants
        .iter()
        .filter(|v| bootable(v).is_some())
        .collect();
    let mut out = String::from("#!ipxe\n");
    if listed.is_empty() {
        out.push_str("echo kiln: nothing here boots (no netboot variant, no raw disk)\nshell\n");
        return out;
    }
    out.push_str(&format!(
        "menu kiln: {} bootable variant(s)\n",
        listed.len()
    ));
    for v in &listed {
        let how = match bootable(v) {
            Some(Bootable::Netboot) => "netboot, into RAM",
            _ => "raw disk, sanboot",
        };
        out.push_str(&format!("item {0} {0} ({how})\n", v.variant));
    }
    out.push_str("item --gap\nitem shell iPXE shell\n");
    out.push_str(&format!(
        "choose --default {} --timeout 10000 target || goto shell\n\
         iseq ${{target}} shell && goto shell ||\n\
         chain {url}/${{target}}.ipxe || goto shell\n\
         :shell\nshell\n",
        listed[0].variant
    ));
    out
}

/// The boot server's routes, under `/boot/`.
pub fn routes<S: Clone + Send + Sync + 'static>(options: BootOptions) -> axum::Router<S> {
    let options = Arc::new(options);
    let root = Arc::clone(&options);
    axum::Router::new()
        .route(
            "/boot/",
            get(move |headers: HeaderMap, request: Request| async move {
                respond(&root, "/boot", "", &headers, request).await
            }),
        )
        .route(
            "/boot/{*rest}",
            get(
                move |headers: HeaderMap, UrlPath(rest): UrlPath<String>, request: Request| async move {
                    respond(&options, "/boot", &rest, &headers, request).await
                },
            ),
        )
}

/// Answers a request for `rest` below a boot root served at URL path
/// `prefix` (`/boot`, or deeper when another server mounts one per
/// build): `""` and `menu.ipxe` the menu, `VARIANT.ipxe` a variant's
/// script, `files/PATH` the output folder, `extra/NAME` an extra overlay.
/// Every error is JSON with its status.
pub async fn respond(
    options: &BootOptions,
    prefix: &str,
    rest: &str,
    headers: &HeaderMap,
    request: Request,
) -> Response {
    // A variant's script: `VARIANT.ipxe`, exactly (names are case-sensitive).
    let script_of = rest.strip_suffix(".ipxe").filter(|v| !v.is_empty());
    let answer = match rest.split_once('/') {
        Some(("files", path)) => file(options, path, request).await,
        Some(("extra", name)) => extra(options, name, request).await,
        None if rest.is_empty() || rest == "menu.ipxe" => menu(options, prefix, headers).await,
        None if script_of.is_some() => {
            script(options, prefix, script_of.unwrap_or_default(), headers).await
        }
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "`{prefix}/{rest}` does not exist: boot scripts are `{prefix}/<variant>.ipxe`, the menu `{prefix}/menu.ipxe`, files `{prefix}/files/<path>`"
            ),
        )),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The boot root's URL for the scripts: the public one or `http://` and
/// the request's `Host` (which must look like a host, as it goes into a
/// script), then `prefix`.
fn base_url(options: &BootOptions, prefix: &str, headers: &HeaderMap) -> Result<String, ApiError> {
    let root = if let Some(url) = &options.public_url {
        url.trim_end_matches('/').to_owned()
    } else {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let fine = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !fine {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("the Host header `{host}` is not a host name and port"),
            ));
        }
        format!("http://{host}")
    };
    Ok(match (&options.credentials, root.split_once("://")) {
        (Some(credentials), Some((scheme, rest))) => {
            format!("{scheme}://{credentials}@{rest}{prefix}")
        }
        _ => format!("{root}{prefix}"),
    })
}

fn ipxe(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn menu(
    options: &BootOptions,
    prefix: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let url = base_url(options, prefix, headers)?;
    let manifest = read_manifest(&options.out_dir).await?;
    Ok(ipxe(ipxe_menu(&manifest, &url)))
}

async fn script(
    options: &BootOptions,
    prefix: &str,
    variant: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let url = base_url(options, prefix, headers)?;
    let manifest = read_manifest(&options.out_dir).await?;
    let entry = manifest.variant(variant).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("there is no variant `{variant}` in {prefix}'s manifest"),
        )
    })?;
    ipxe_script(entry, &url, options).map(ipxe).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("`{variant}` does not boot from a boot server: it is no netboot variant (`netboot = true` with `kernel = true`, a squashfs, or an overlay.cpio.gz over one) and has no raw disk"),
        )
    })
}

async fn file(options: &BootOptions, path: &str, request: Request) -> Result<Response, ApiError> {
    let file = options.out_dir.join(path);
    if !is_plain_relative(path) || !file.is_file() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("`{path}` does not exist in the output folder"),
        ));
    }
    serve_file(file, request).await
}

async fn extra(options: &BootOptions, name: &str, request: Request) -> Result<Response, ApiError> {
    let known = options.extra_overlays.iter().any(|o| o.name == name);
    let Some(dir) = options.extra_dir.as_ref().filter(|_| known) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("`extra/{name}` does not exist"),
        ));
    };
    serve_file(dir.join(name), request).await
}

/// Whether a URL path names a file below a served folder: `/`-separated
/// names, none empty, none starting with `.` (so no `.`, `..` or hidden
/// file).
#[must_use]
pub fn is_plain_relative(path: &str) -> bool {
    path.split('/')
        .all(|p| !p.is_empty() && !p.starts_with('.'))
}

async fn serve_file(file: PathBuf, request: Request) -> Result<Response, ApiError> {
    let response = tower_http::services::ServeFile::new(file)
        .oneshot(request)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(response.into_response())
}

async fn read_manifest(out_dir: &Path) -> Result<Manifest, ApiError> {
    let dir = out_dir.to_path_buf();
    tokio::task::spawn_blocking(move || Manifest::read(&dir))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Runs a boot server on `listen` until SIGTERM or SIGINT. `ready` gets
/// the address bound.
pub fn serve(
    options: BootOptions,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let runtime = runtime()?;
    runtime.block_on(async move {
        let listener = bind(listen).await?;
        let bound = listener.local_addr().unwrap_or(listen);
        ready(bound);
        axum::serve(listener, routes::<()>(options))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|error| Error::Io {
                action: "serve on",
                path: bound.to_string().into(),
                error,
            })
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| Error::Io {
            action: "start the runtime for",
            path: "the boot server".into(),
            error,
        })
}

async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| Error::Io {
            action: "listen on",
            path: listen.to_string().into(),
            error,
        })
}

/// A boot server on a thread of its own, stopped when dropped: what
/// `kiln boot` and `kiln test` start for a netboot guest.
#[derive(Debug)]
pub struct BootServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BootServer {
    /// Starts serving `options` on `listen` (port 0: any free port).
    pub fn start(options: BootOptions, listen: SocketAddr) -> Result<BootServer, Error> {
        let runtime = runtime()?;
        let listener = runtime.block_on(bind(listen))?;
        let addr = listener.local_addr().unwrap_or(listen);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kiln-boot-server".into())
            .spawn(move || {
                // Dropped, not drained, when told to stop: a guest's
                // keep-alive connection must not hold the caller up.
                runtime.block_on(async move {
                    tokio::select! {
                        _ = axum::serve(listener, routes::<()>(options)) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|error| Error::Io {
                action: "start a thread for",
                path: "the boot server".into(),
                error,
            })?;
        Ok(BootServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolves at SIGTERM or SIGINT (what `kiln boot-server` and `kiln
/// serve` stop at).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_build::manifest::{ArtifactEntry, NetbootEntry, NetbootFile};

    fn entry(name: &str, netboot: bool, raw: bool) -> VariantEntry {
        let file = |path: &str, sha: &str| NetbootFile {
            path: path.into(),
            sha256: sha.into(),
            size: 1,
        };
        VariantEntry {
            variant: name.into(),
            artifacts: raw
                .then(|| ArtifactEntry {
                    name: format!("{name}-r0.raw"),
                    revision: 0,
                    format: "raw".into(),
                    path: format!("{name}/{name}-r0.raw"),
                    size: 1,
                    sha256: "00".into(),
                    build_time: String::new(),
                    kiln_version: String::new(),
                })
                .into_iter()
                .collect(),
            netboot: netboot.then(|| NetbootEntry {
                base_variant: "base".into(),
                kernel: "base/base-r0.vmlinuz".into(),
                initrd: "base/base-r0.initrd.img".into(),
                base: file("base/base-r0.squashfs", "aa"),
                overlays: vec![file("web/web-r0.overlay.cpio.gz", "bb")],
                cmdline: String::new(),
            }),
            ..VariantEntry::default()
        }
    }

    #[test]
    fn a_netboot_script_names_every_file_with_its_hash_and_extra_overlays_last() {
        let mut options = BootOptions::new(PathBuf::from("out"));
        options.extra_overlays.push(ExtraOverlay {
            name: "t.cpio.gz".into(),
            sha256: "cc".into(),
        });
        let script =
            ipxe_script(&entry("web", true, false), "http://h:1/boot", &options).expect("boots");
        assert!(script.starts_with("#!ipxe\n"), "{script}");
        let kernel = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .expect("kernel line");
        for part in [
            "http://h:1/boot/files/base/base-r0.vmlinuz",
            "initrd=initrd.img",
            "boot=kiln-netboot",
            "kiln.url=http://h:1/boot/files",
            "kiln.base=base/base-r0.squashfs",
            "kiln.base.sha256=aa",
            "kiln.overlay=web/web-r0.overlay.cpio.gz,http://h:1/boot/extra/t.cpio.gz",
            "kiln.overlay.sha256=bb,cc",
            "console=ttyS0,115200",
            "BOOTIF=01-${netX/mac:hexhyp}",
        ] {
            assert!(kernel.split(' ').any(|w| w == part), "{part} in {kernel}");
        }
        assert!(
            script.contains(
                "initrd --name initrd.img http://h:1/boot/files/base/base-r0.initrd.img\n"
            )
        );
    }

    #[test]
    fn a_raw_disk_is_sanbooted_and_the_menu_lists_only_what_boots() {
        let options = BootOptions::new(PathBuf::from("out"));
        let disk =
            ipxe_script(&entry("vm", false, true), "http://h/boot", &options).expect("boots");
        assert!(
            disk.contains("sanboot --no-describe http://h/boot/files/vm/vm-r0.raw\n"),
            "{disk}"
        );
        assert!(ipxe_script(&entry("app", false, false), "http://h/boot", &options).is_none());
        let manifest = Manifest {
            kiln_version: String::new(),
            variants: vec![
                entry("app", false, false),
                entry("vm", false, true),
                entry("web", true, false),
            ],
        };
        let menu = ipxe_menu(&manifest, "http://h/boot");
        assert!(menu.contains("item vm vm (raw disk, sanboot)\n"), "{menu}");
        assert!(
            menu.contains("item web web (netboot, into RAM)\n"),
            "{menu}"
        );
        assert!(!menu.contains("item app"), "{menu}");
        assert!(
            menu.contains("chain http://h/boot/${target}.ipxe"),
            "{menu}"
        );
        let empty = ipxe_menu(&Manifest::default(), "http://h");
        assert!(empty.contains("nothing here boots"), "{empty}");
    }

    /// What another server (`kiln serve`) gets when it mounts a boot root
    /// deeper than `/boot/`, for a client that sent credentials.
    #[test]
    fn a_mounted_boot_root_addresses_its_own_prefix_with_the_credentials() {
        let dir = tempfile::tempdir().expect("temp");
        let manifest = Manifest {
            variants: vec![entry("web", true, false)],
            ..Manifest::default()
        };
        manifest.write(dir.path()).expect("manifest");
        std::fs::create_dir_all(dir.path().join("base")).expect("dir");
        std::fs::write(dir.path().join("base/base-r0.vmlinuz"), b"kernel").expect("file");
        let mut options = BootOptions::new(dir.path().to_path_buf());
        options.credentials = Some("boot:t0k".into());
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "h:8470".parse().expect("header"));
        let runtime = runtime().expect("runtime");
        let get = |rest: &str| {
            runtime.block_on(async {
                let request = Request::builder()
                    .uri(format!("/boot/images/5/{rest}"))
                    .body(axum::body::Body::empty())
                    .expect("request");
                let response = respond(&options, "/boot/images/5", rest, &headers, request).await;
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        };
        let (status, script) = get("web.ipxe");
        assert_eq!(status, StatusCode::OK, "{script}");
        assert!(
            script.contains(
                "kernel http://boot:t0k@h:8470/boot/images/5/files/base/base-r0.vmlinuz "
            ),
            "{script}"
        );
        assert!(
            script.contains(" kiln.url=http://boot:t0k@h:8470/boot/images/5/files "),
            "{script}"
        );
        let (status, menu) = get("menu.ipxe");
        assert_eq!(status, StatusCode::OK);
        assert!(
            menu.contains("chain http://boot:t0k@h:8470/boot/images/5/${target}.ipxe"),
            "{menu}"
        );
        assert_eq!(
            get("files/base/base-r0.vmlinuz"),
            (StatusCode::OK, "kernel".into())
        );
        for missing in [
            "files/base/../base/base-r0.vmlinuz",
            "nope",
            "files/",
            "tools.ipxe",
        ] {
            let (status, body) = get(missing);
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
            assert!(body.starts_with("{\"error\":"), "{missing}: {body}");
        }
    }
}
