//! The variant matrix, with the semantics of Alpine's cloud image configs.

use std::collections::BTreeSet;

use kiln_config::settings::OutputSpec;

use crate::{SOURCES, plan, write};

const ALPINE_LIKE: &str = r#"
exclude = [["tiny", "azure"]]

[defaults]
packages = ["base"]
hostname = "default"
labels = { a = "1" }
outputs = ["tar"]

# Nested `when`: applies to (aws or azure) and uefi.
[defaults.when."aws azure".when.uefi]
packages = ["uefi-cloud"]

[dimensions.version."3.17"]
packages = ["ver-3.17"]
[dimensions.version."3.18"]
packages = ["ver-3.18"]
[dimensions.version."3.19"]
packages = ["ver-3.19"]
[dimensions.version.edge]
# A reset: edge starts its package list over.
"packages!" = ["edge-base"]

[dimensions.arch.x86_64]
arch = "amd64"
[dimensions.arch.aarch64]
arch = "arm64"
exclude = ["bios"]

[dimensions.firmware.bios]
[dimensions.firmware.uefi]
kernel = true
packages = ["grub-efi"]

[dimensions.bootstrap.tiny]
packages = ["tiny-cloud"]
[dimensions.bootstrap.cloudinit]
packages = ["cloud-init"]

[dimensions.cloud.aws]
packages = ["aws-tools"]
when = { aarch64 = { packages = ["graviton"] } }
[dimensions.cloud.nocloud]
[dimensions.cloud.azure]
labels = { cloud = "azure" }
[dimensions.cloud.gcp]
labels = { cloud = "gcp" }
outputs = []

[mandatory]
labels = { managed = "kiln" }
"#;

const IMAGE: &str = r#"
from = "debian:bookworm"
hostname = "img-{version}"
description = "Alpine {version} {arch} {firmware} ({variant})"
"#;

fn expected_packages(v: &str, a: &str, f: &str, b: &str, c: &str) -> Vec<String> {
    let mut pk: Vec<String> = vec!["base".into()];
    if (c == "aws" || c == "azure") && f == "uefi" {
        pk.push("uefi-cloud".into());
    }
    if v == "edge" {
        pk = vec!["edge-base".into()];
    } else {
        pk.push(format!("ver-{v}"));
    }
    if f == "uefi" {
        pk.push("grub-efi".into());
    }
    pk.push(
        if b == "tiny" {
            "tiny-cloud"
        } else {
            "cloud-init"
        }
        .into(),
    );
    if c == "aws" {
        pk.push("aws-tools".into());
        if a == "aarch64" {
            pk.push("graviton".into());
        }
    }
    pk
}

#[test]
fn alpine_like_matrix_expands_to_the_expected_variants() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            ("kiln.toml", &format!("{ALPINE_LIKE}\n{SOURCES}")),
            ("alpine/image.toml", IMAGE),
        ],
    );
    let plan = plan(dir.path());

    let mut expected = BTreeSet::new();
    for v in ["3.17", "3.18", "3.19", "edge"] {
        for a in ["x86_64", "aarch64"] {
            for f in ["bios", "uefi"] {
                for b in ["tiny", "cloudinit"] {
                    for c in ["aws", "nocloud", "azure", "gcp"] {
                        if (a == "aarch64" && f == "bios") || (b == "tiny" && c == "azure") {
                            continue;
                        }
                        expected.insert(format!("alpine-{v}-{a}-{f}-{b}-{c}"));
                    }
                }
            }
        }
    }
    // 4*2*2*2*4 = 128, minus aarch64+bios (32), minus tiny+azure on what is left (12).
    assert_eq!(expected.len(), 84);
    let got: BTreeSet<String> = plan.variants.iter().map(|v| v.name.clone()).collect();
    assert_eq!(got, expected);

    for var in &plan.variants {
        let k: Vec<&str> = var.keys.iter().map(|(_, k)| k.as_str()).collect();
        let dims: Vec<&str> = var.keys.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dims, ["version", "arch", "firmware", "bootstrap", "cloud"]);
        let (v, a, f, b, c) = (k[0], k[1], k[2], k[3], k[4]);
        let s = &var.settings;
        let packages: Vec<String> = s.packages.iter().map(|p| p.name.clone()).collect();
        assert_eq!(packages, expected_packages(v, a, f, b, c), "{}", var.name);
        assert_eq!(s.kernel, f == "uefi", "{}", var.name);
        assert_eq!(s.arch, if a == "x86_64" { "amd64" } else { "arm64" });
        assert_eq!(s.hostname.as_deref(), Some(format!("img-{v}").as_str()));
        assert_eq!(
            s.description.as_deref(),
            Some(format!("Alpine {v} {a} {f} ({})", var.name).as_str())
        );
        let mut labels: Vec<(String, String)> =
            vec![("a".into(), "1".into()), ("managed".into(), "kiln".into())];
        if c == "azure" || c == "gcp" {
            labels.push(("cloud".into(), c.into()));
        }
        labels.sort();
        assert_eq!(
            s.labels.clone().into_iter().collect::<Vec<_>>(),
            labels,
            "{}",
            var.name
        );
        // `outputs = []` in gcp clears the defaults' list.
        let formats: Vec<&str> = s
            .outputs
            .iter()
            .map(|o: &OutputSpec| o.format.name())
            .collect();
        assert_eq!(
            formats,
            if c == "gcp" { vec![] } else { vec!["tar"] },
            "{}",
            var.name
        );
        assert!(var.parent.is_none());
    }
}

#[test]
fn images_restrict_and_opt_out_and_children_find_their_parent() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            (
                "kiln.toml",
                &format!(
                    "{SOURCES}\n[dimensions.suite.bookworm]\n[dimensions.suite.trixie]\n[dimensions.suite.sid]\n[dimensions.firmware.bios]\n[dimensions.firmware.uefi]\n"
                ),
            ),
            (
                "base/image.toml",
                "from = \"debian:{suite}\"\n[matrix]\nsuite = [\"bookworm\", \"trixie\"]\nfirmware = false\n",
            ),
            (
                "disk/image.toml",
                "from = \"base\"\n[matrix]\nsuite = [\"trixie\"]\n",
            ),
        ],
    );
    let plan = plan(dir.path());
    let names: Vec<&str> = plan.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base-bookworm",
            "base-trixie",
            "disk-trixie-bios",
            "disk-trixie-uefi"
        ]
    );
    for v in &plan.variants[2..] {
        assert_eq!(
            plan.variants[v.parent.expect("has parent")].name,
            "base-trixie"
        );
    }
}
