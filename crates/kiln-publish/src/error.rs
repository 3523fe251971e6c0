//! The crate's one error type.

use std::path::PathBuf;

/// Why publishing, listing or a lifecycle change failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be reached (connection, DNS, TLS).
    #[error("cannot reach the registry at {url}: {detail}")]
    Connect {
        /// What was asked for.
        url: String,
        /// ureq's description (a TLS problem names the certificate).
        detail: String,
    },
    /// The registry wants credentials and none were given, or it refused
    /// the ones given.
    #[error("the registry {registry} refused access ({detail}); {help}")]
    Unauthorized {
        /// The registry's host.
        registry: String,
        /// What it said.
        detail: String,
        /// What to do.
        help: &'static str,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: the registry answered HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// The status.
        status: u16,
        /// The registry's error message, when it sent one.
        message: Option<String>,
    },
    /// The registry's answer is not what the distribution spec says.
    #[error("{url}: {problem}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// What is wrong with the answer.
        problem: String,
    },
    /// `--plain-http` for a registry that is not on this machine.
    #[error(
        "--plain-http is only allowed for a registry on this machine (127.0.0.1, ::1, localhost), not {registry}: anything else would send images and credentials unencrypted"
    )]
    PlainHttp {
        /// The registry's host.
        registry: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--ca-file` holds no certificate.
    #[error("{}: {problem}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A reference (`registry/repository:tag`) is malformed.
    #[error("`{reference}` is not an image reference: {problem}")]
    Reference {
        /// As written.
        reference: String,
        /// What is wrong.
        problem: String,
    },
    /// A `[publish]` template is wrong, or renders to something the
    /// registry cannot take.
    #[error("variant `{variant}`: [publish] {field} `{template}`: {problem}")]
    Template {
        /// The variant it was rendered for.
        variant: String,
        /// `repository`, `tags` or `id`.
        field: &'static str,
        /// The template.
        template: String,
        /// What is wrong.
        problem: String,
    },
    /// A variant has no `[publish] registry`.
    #[error(
        "variant `{variant}` has no [publish] registry: set `registry` in [defaults.publish] of kiln.toml (e.g. `registry = \"127.0.0.1:5000/kiln\"`) or pass --registry"
    )]
    NoRegistry {
        /// The variant.
        variant: String,
    },
    /// A new id breaks a rule (differs, sorts later, is not taken).
    #[error("variant `{variant}` ({format}): id `{id}` {problem}")]
    Id {
        /// The variant.
        variant: String,
        /// The artifact's format.
        format: String,
        /// The rendered id.
        id: String,
        /// Which rule it breaks.
        problem: String,
    },
    /// A variant to publish has not been built.
    #[error("variant `{variant}` has no artifacts in {}: the build did not write any", out.display())]
    NotBuilt {
        /// The variant.
        variant: String,
        /// The output folder.
        out: PathBuf,
    },
    /// An artifact on disk is not what the manifest says.
    #[error("{}: {problem}", path.display())]
    Artifact {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A lifecycle run would act on more images than allowed, or on one
    /// it must not touch.
    #[error("{0}")]
    Refused(String),
}
