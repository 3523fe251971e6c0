//! Every kind of bad input: a snapshot of its message, and exit code 2.

use crate::{SOURCES, TestTree, kiln, kiln_with_env};

/// Runs `kiln plan` on a tree that must fail, and returns stderr.
fn fail(files: &[(&str, &str)], extra: &[&str]) -> String {
    let tree = TestTree::new(files);
    let mut args = vec!["plan", "."];
    args.extend(extra);
    let run = kiln(tree.path(), &args);
    assert_eq!(run.code, 2, "exit code 2 expected; stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    run.stderr
}

/// `kiln.toml`: `extra` first, so its top-level keys stay top-level.
fn root(extra: &str) -> String {
    format!("{extra}\n{SOURCES}")
}

const SUITES: &str = "
[dimensions.suite.bookworm]
[dimensions.suite.trixie]
";

#[test]
fn unknown_field_suggests_the_closest() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\npakages = [\"curl\"]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn wrong_types() {
    let err = fail(
        &[
            (
                "kiln.toml",
                &root("[defaults]\nkernel = \"yes\"\n[output]\nepoch = \"soon\"\n"),
            ),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\npackages = \"curl\"\nusers = [{ name = \"a\", uid = \"1000\" }]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn password_must_be_a_crypt_hash() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\nusers = [\n  { name = \"alice\", password = \"hunter2\" },\n  { name = \"bob\", password = \"$6$salt$a:b\" },\n  { name = \"carol\", password = \"!\" },\n  { name = \"dave\", password = \"$y$j9T$salt$hash\" },\n]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_parent_image() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            ("base/image.toml", "from = \"debian:bookworm\"\n"),
            ("app/image.toml", "from = \"bsae\"\n"),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn cycles_are_printed() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            ("a/image.toml", "from = \"c\"\n"),
            ("b/image.toml", "from = \"a\"\n"),
            ("c/image.toml", "from = \"b\"\n"),
            ("self/image.toml", "from = \"self\"\n"),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_keys_in_only_when_and_exclude() {
    let err = fail(
        &[
            (
                "kiln.toml",
                &root(&format!(
                    "exclude = [[\"bookworm\", \"uefy\"]]\n[defaults.when.trixy]\nhostname = \"t\"\n{SUITES}"
                )),
            ),
            (
                "base/image.toml",
                "from = \"debian:{suite}\"\nexclude = [\"sid\"]\n",
            ),
        ],
        &["--only", "bookwrm", "--skip", "nothing"],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn interpolation_of_an_unknown_dimension() {
    let err = fail(
        &[
            ("kiln.toml", &root(SUITES)),
            (
                "base/image.toml",
                "from = \"debian:{suite}\"\ndescription = \"for {arch}\"\n",
            ),
            (
                "one/image.toml",
                "from = \"debian:bookworm\"\nhostname = \"h-{suite}\"\n[matrix]\nsuite = false\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn two_images_with_one_name() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            ("a/base/image.toml", "from = \"debian:bookworm\"\n"),
            ("b/base/image.toml", "from = \"debian:bookworm\"\n"),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn a_matrix_that_excludes_every_variant() {
    let err = fail(
        &[
            (
                "kiln.toml",
                &root(&format!("exclude = [[\"bookworm\"]]\n{SUITES}\n")),
            ),
            (
                "base/image.toml",
                "from = \"debian:{suite}\"\nexclude = [\"trixie\"]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn invalid_toml_reports_every_syntax_error() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\npackages = [curl]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unreadable_files() {
    let tree = TestTree::new(&[
        ("kiln.toml", &root("")),
        ("bin/image.toml", ""),
        ("dir/placeholder", ""),
    ]);
    std::fs::write(
        tree.path().join("bin/image.toml"),
        b"from = \"debian:bookworm\"\n\xff\xfe\n",
    )
    .expect("write");
    // A folder where image.toml should be a file.
    std::fs::create_dir_all(tree.path().join("dir/image.toml")).expect("mkdir");
    let run = kiln(tree.path(), &["plan", "."]);
    assert_eq!(run.code, 2);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn missing_kiln_toml() {
    let tree = TestTree::new(&[("base/image.toml", "from = \"debian:bookworm\"\n")]);
    let run = kiln(tree.path(), &["plan", "."]);
    assert_eq!(run.code, 2);
    insta::assert_snapshot!(
        run.stderr
            .replace(&tree.path().display().to_string(), "[TREE]")
    );
}

#[test]
fn missing_script_and_bad_paths() {
    let err = fail(
        &[
            (
                "kiln.toml",
                &root("[defaults]\nrun = [\"shared/missing.sh\"]\n"),
            ),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\nrun = [\"setup.sh\", \"../escape.sh\"]\nfiles = [{ path = \"etc/motd\", content = \"hi\" }]\n",
            ),
            (
                "ok/image.toml",
                "from = \"debian:bookworm\"\nrun = [\"setup.sh\"]\nfiles = [{ path = \"/etc/a\", source = \"a.txt\" }]\n",
            ),
            ("ok/a.txt", "a\n"),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn parent_without_a_matching_variant() {
    let err = fail(
        &[
            ("kiln.toml", &root(SUITES)),
            (
                "base/image.toml",
                "from = \"debian:{suite}\"\n[matrix]\nsuite = [\"bookworm\"]\n",
            ),
            ("app/image.toml", "from = \"base\"\n"),
            (
                "flat/image.toml",
                "from = \"base\"\n[matrix]\nsuite = false\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn usage_errors_exit_2() {
    let tree = TestTree::new(&[]);
    let run = kiln(tree.path(), &["plan", "--no-such-flag"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--no-such-flag"), "{}", run.stderr);
}

#[test]
fn output_options_out_of_range() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\noutputs = [\n  { format = \"tar.zst\", level = 30 },\n  { format = \"squashfs\", block_size = \"3000\" },\n  { format = \"squashfs\", compression = \"lz4\", level = 4 },\n  { format = \"cpio.gz\", level = 0 },\n]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn malformed_source_date_epoch_stops_plan_and_build() {
    let tree = TestTree::new(&[
        ("kiln.toml", &root("")),
        ("base/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    let mut texts = Vec::new();
    for (command, value) in [("plan", "yesterday"), ("build", "-5"), ("build", "1.5e9")] {
        let run = kiln_with_env(
            tree.path(),
            &[command, ".", "--cache-dir", "cache"],
            &[("SOURCE_DATE_EPOCH", value)],
        );
        assert_eq!(run.code, 2, "{command} with `{value}`: {}", run.stderr);
        assert!(
            !tree.path().join("cache").exists() && !tree.path().join("out").exists(),
            "nothing is written before the error"
        );
        texts.push(run.stderr);
    }
    insta::assert_snapshot!(texts.join("---\n"));
}

#[test]
fn disk_outputs_need_a_kernel() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\noutputs = [\"tar\", { format = \"qcow2\", firmware = \"uefi\" }, \"raw\"]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

/// What only the variant decides (its architecture, the OCI names it
/// asks for) is checked when the tree is loaded, so `kiln plan` reports it
/// at the output's line and column instead of the build failing after the
/// layer is built. An arch dimension gives the i386 variant the error and
/// leaves the amd64 one alone.
#[test]
fn outputs_the_variant_cannot_have_fail_at_plan() {
    let err = fail(
        &[
            (
                "kiln.toml",
                &root(
                    "[dimensions.arch.amd64]\narch = \"amd64\"\n[dimensions.arch.i386]\narch = \"i386\"\n",
                ),
            ),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\nkernel = true\noutputs = [\n  \"tar\",\n  { format = \"qcow2\", firmware = \"bios\" },\n]\n",
            ),
            (
                "app/image.toml",
                "from = \"base\"\noutputs = [\n  { format = \"oci.tar\", repository = \"Team/App\" },\n  { format = \"oci\", tag = \"-bad\" },\n]\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn netboot_needs_a_kernel_and_test_fields_are_checked() {
    let err = fail(
        &[
            ("kiln.toml", &root("")),
            (
                "base/image.toml",
                "from = \"debian:bookworm\"\nnetboot = true\n\n[test]\nboot = \"pxe\"\ntimeout = \"soon\"\n",
            ),
        ],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn kiln_test_without_a_test_table_says_how_to_add_one() {
    let tree = TestTree::new(&[
        ("kiln.toml", &root("")),
        ("base/image.toml", "from = \"debian:bookworm\"\n"),
    ]);
    let run = kiln(tree.path(), &["test", "."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
}
