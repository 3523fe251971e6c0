//! The grammars of the names an OCI output gives its image: the
//! `org.opencontainers.image.ref.name` of a layout and the
//! `REPOSITORY:TAG` of Docker's `manifest.json`. They live here, with the
//! configuration, so that a bad name is an error at its `file:line:column`
//! when the tree is loaded; the OCI writer checks the same grammar again.

/// Whether `s` is a `REPOSITORY:TAG` Docker accepts: `/`-separated
/// repository components of lower-case letters and digits joined by `.`,
/// `_` or `-` (the first may be a registry host with a port), and a tag of
/// up to 128 letters, digits, `_`, `.` and `-` not starting with `.` or
/// `-`.
#[must_use]
pub fn is_docker_reference(s: &str) -> bool {
    let Some((repository, tag)) = s.rsplit_once(':') else {
        return false;
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    let component = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    let mut parts = repository.split('/');
    let first = parts.next().unwrap_or_default();
    // A registry host may carry a port (`registry.example:5000/team/app`).
    let first_ok = match first.split_once(':') {
        Some((host, port)) => {
            repository.contains('/')
                && component(host)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => component(first),
    };
    tag_ok && first_ok && parts.all(component)
}

/// Whether `s` follows image-spec's grammar for
/// `org.opencontainers.image.ref.name`:
/// `alphanum+ ((separator) alphanum+)*` in `/`-separated components, a
/// separator being one of `-._:@+` or `--`.
#[must_use]
pub fn is_ref_name(s: &str) -> bool {
    s.split('/').all(|component| {
        let b = component.as_bytes();
        let mut i = 0;
        let mut after_alnum = false;
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                after_alnum = true;
                i += 1;
            } else if after_alnum && b[i..].starts_with(b"--") {
                after_alnum = false;
                i += 2;
            } else if after_alnum && b"-._:@+".contains(&b[i]) {
                after_alnum = false;
                i += 1;
            } else {
                return false;
            }
        }
        after_alnum
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_the_grammar() {
        for good in ["latest", "v1.0", "debian/bookworm-slim", "a--b", "x:y@z+1"] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a/", "/a", "a b", "a---b", "a..b", "ü"] {
            assert!(!is_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn docker_references_follow_dockers_grammar() {
        for good in [
            "vm:latest",
            "team/vm:1.2",
            "registry.example:5000/team/vm:v1_rc-2",
            "a.b_c-d:X",
        ] {
            assert!(is_docker_reference(good), "{good}");
        }
        for bad in [
            "vm",
            "VM:latest",
            "vm:",
            "vm:-x",
            "-vm:latest",
            "vm:a+b",
            "host:5000:latest",
            "a//b:latest",
            "vm@sha256:ab",
        ] {
            assert!(!is_docker_reference(bad), "{bad}");
        }
    }
}
