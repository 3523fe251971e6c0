//! The host's apt sources: deb822 and one-line formats.

use std::path::PathBuf;

use kiln_config::source::host_sources;
use kiln_config::{Diagnostics, Keyring, SourceMap};

#[test]
fn reads_deb822_and_one_line_sources() {
    let root = tempfile::tempdir().expect("tmp");
    let apt = root.path().join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&apt).expect("mkdir");
    std::fs::write(
        apt.join("debian.sources"),
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n\n\
         Types: deb\nEnabled: no\nURIs: http://off.invalid\nSuites: bookworm\n\n\
         Types: deb\nURIs: http://inline.invalid\nSuites: stable\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n",
    )
    .expect("write");
    std::fs::write(
        root.path().join("etc/apt/sources.list"),
        "# old style\ndeb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian bookworm-security main\ndeb-src http://one.invalid/debian bookworm main\n",
    )
    .expect("write");
    std::fs::write(
        apt.join("ignored.list.disabled"),
        "deb http://no.invalid x main\n",
    )
    .expect("write");

    let mut map = SourceMap::default();
    let mut diags = Diagnostics::default();
    let sources = host_sources(root.path(), &mut map, &mut diags);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(sources.len(), 3);

    assert_eq!(sources[0].uris, ["http://one.invalid/debian"]);
    assert_eq!(sources[0].suites, ["bookworm-security"]);
    assert_eq!(sources[0].architectures, ["amd64"]);
    assert_eq!(sources[0].keyring, Keyring::File(PathBuf::from("/k.gpg")));

    assert_eq!(sources[1].suites, ["bookworm", "bookworm-updates"]);
    assert_eq!(sources[1].components, ["main", "contrib"]);
    assert_eq!(
        sources[1].keyring,
        Keyring::File(PathBuf::from(
            "/usr/share/keyrings/debian-archive-keyring.gpg"
        ))
    );

    match &sources[2].keyring {
        Keyring::Inline(k) => {
            assert!(
                k.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n"),
                "{k:?}"
            );
        }
        other @ Keyring::File(_) => panic!("expected an inline key, got {other:?}"),
    }
}

#[test]
fn the_hosts_own_sources_parse() {
    // This machine's real configuration: whatever it holds must parse.
    let mut map = SourceMap::default();
    let mut diags = Diagnostics::default();
    let sources = host_sources(std::path::Path::new("/"), &mut map, &mut diags);
    assert!(diags.is_empty(), "{diags:?}");
    if std::path::Path::new("/etc/apt/sources.list.d/debian.sources").exists() {
        assert!(
            sources
                .iter()
                .any(|s| !s.suites.is_empty() && !s.uris.is_empty())
        );
    }
}
