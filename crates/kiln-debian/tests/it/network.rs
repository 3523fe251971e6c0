//! Against the real Debian archive, through the host's apt sources.
//!
//! Set `KILN_SKIP_NETWORK_TESTS=1` to skip where there is no network.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_debian::{
    AptSource, Architecture, BaseSet, DebianSource, DistributionSource, NoProgress,
    RepositoryOptions, ResolveRequest,
};

const HOST_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Reads the `Types: deb` stanzas of a deb822 `.sources` file.
fn host_sources(path: &Path) -> Vec<AptSource> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields = std::collections::HashMap::new();
        for line in stanza.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                if !key.starts_with(' ') {
                    fields.insert(key.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
        let words = |key: &str| -> Vec<String> {
            fields
                .get(key)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        if !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        out.push(AptSource {
            uris: words("URIs"),
            suites: words("Suites"),
            components: words("Components"),
            keyring: fields.get("Signed-By").map_or_else(
                || PathBuf::from(kiln_debian::keyring::DEBIAN_ARCHIVE_KEYRING),
                PathBuf::from,
            ),
        });
    }
    out
}

#[test]
fn resolves_bookworm_minbase_like_mmdebstrap() {
    if kiln_testkit::require::network_tests_skipped()
        || (!Path::new(HOST_SOURCES).exists()
            && kiln_testkit::require::skip("the host has no deb822 apt sources (HOST_SOURCES)"))
    {
        return;
    }
    let sources = host_sources(Path::new(HOST_SOURCES));
    assert!(!sources.is_empty());
    assert_eq!(
        sources[0].suites[0], "bookworm",
        "the test expects bookworm sources"
    );
    let cache = tempfile::tempdir().unwrap();
    let mut debian = DebianSource::new(
        sources.clone(),
        Architecture::default(),
        RepositoryOptions::new(cache.path()),
    )
    .unwrap();
    debian.fetch_indexes(&NoProgress).unwrap();
    let request = ResolveRequest {
        base: BaseSet::Required,
        ..ResolveRequest::default()
    };
    let set = debian.resolve(&request).unwrap();
    let names: Vec<&str> = set.names().collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "no duplicate names");
    for required in [
        "apt",
        "dpkg",
        "base-files",
        "libc6",
        "bash",
        "coreutils",
        "mawk",
        "debian-archive-keyring",
    ] {
        assert!(unique.contains(required), "{required} is in minbase");
    }
    // mmdebstrap --variant=minbase bookworm installs 96 packages (see NOTES.md);
    // leave room for point releases adding or dropping a library.
    assert!(
        (90..=105).contains(&names.len()),
        "{} packages: {names:?}",
        names.len()
    );
    if let Ok(dump) = std::env::var("KILN_DUMP_MINBASE") {
        let lines: Vec<String> = set
            .packages
            .iter()
            .map(|p| format!("{} {}\n", p.name, p.version))
            .collect();
        std::fs::write(dump, lines.concat()).unwrap();
    }

    // A warm run needs only the InRelease round-trips, and offline mode none.
    let mut offline_options = RepositoryOptions::new(cache.path());
    offline_options.offline = true;
    let mut offline = DebianSource::new(sources, Architecture::default(), offline_options).unwrap();
    offline.fetch_indexes(&NoProgress).unwrap();
    assert_eq!(offline.resolve(&request).unwrap(), set);
}

#[test]
fn https_mirrors_are_verified_like_http_ones() {
    if kiln_testkit::require::network_tests_skipped()
        || (!Path::new(HOST_SOURCES).exists()
            && kiln_testkit::require::skip("the host has no deb822 apt sources (HOST_SOURCES)"))
    {
        return;
    }
    // The host's first source, over HTTPS (Debian's mirrors serve both).
    let mut source = host_sources(Path::new(HOST_SOURCES)).remove(0);
    source.uris = source
        .uris
        .iter()
        .filter_map(|u| {
            u.strip_prefix("http://")
                .map(|rest| format!("https://{rest}"))
        })
        .collect();
    if source.uris.is_empty() {
        #[allow(clippy::print_stderr)]
        {
            kiln_testkit::require::skip("the host's first apt source is not an http:// mirror");
        }
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let mut debian = DebianSource::new(
        vec![source],
        Architecture::default(),
        RepositoryOptions::new(cache.path()),
    )
    .unwrap();
    debian
        .fetch_indexes(&NoProgress)
        .expect("the InRelease and indexes over HTTPS, verified");
    assert!(debian.indexes().iter().any(|i| !i.packages.is_empty()));
    // A host that presents a certificate for another name is refused:
    // the same mirror by its IP address.
    let host = debian.indexes()[0]
        .uri
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let Some(ip) = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 443))
        .ok()
        .and_then(|mut a| a.next())
    else {
        return;
    };
    let by_ip = AptSource {
        uris: vec![format!("https://{}/debian", ip.ip())],
        suites: vec!["bookworm".into()],
        components: vec!["main".into()],
        keyring: PathBuf::from(kiln_debian::keyring::DEBIAN_ARCHIVE_KEYRING),
    };
    let options = RepositoryOptions {
        retry: kiln_debian::RetryPolicy {
            attempts: 1,
            ..kiln_debian::RetryPolicy::default()
        },
        ..RepositoryOptions::new(cache.path())
    };
    let mut wrong = DebianSource::new(vec![by_ip], Architecture::default(), options).unwrap();
    assert!(
        wrong.fetch_indexes(&NoProgress).is_err(),
        "a certificate that does not name the host is not accepted"
    );
}
