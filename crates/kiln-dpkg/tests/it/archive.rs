//! Crafting `.deb` files in tests: any entry path, including the hostile
//! ones `tar::Builder` refuses to write.

use std::io::Write;

/// One data.tar entry.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    /// A file with mode 0755 (maintainer scripts).
    Exec(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_size(size);
    // Written by hand: `set_path` refuses `..` and absolute paths.
    let name = &mut header.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    header
}

fn tar_gz(entries: &[Entry<'_>]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        match entry {
            Entry::Dir(path) => {
                let mut h = header(path, tar::EntryType::Directory, 0o755, 0);
                h.set_cksum();
                builder.append(&h, std::io::empty()).unwrap();
            }
            Entry::File(path, data) | Entry::Exec(path, data) => {
                let mode = if matches!(entry, Entry::Exec(..)) {
                    0o755
                } else {
                    0o644
                };
                let mut h = header(path, tar::EntryType::Regular, mode, data.len() as u64);
                h.set_cksum();
                builder.append(&h, *data).unwrap();
            }
            Entry::Symlink(path, target) | Entry::HardLink(path, target) => {
                let kind = if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(path, kind, 0o777, 0);
                let link = &mut h.as_old_mut().linkname;
                link.fill(0);
                link[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                builder.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A `.deb` of package `name` with `control` files (`control` is made
/// from `name`) and `data` entries.
pub fn deb(name: &str, control: &[(&str, &str)], data: &[Entry<'_>]) -> Vec<u8> {
    let stanza = format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDescription: test package\n"
    );
    let mut control_entries = vec![
        Entry::Dir("./"),
        Entry::File("./control", stanza.as_bytes()),
    ];
    for (file, content) in control {
        let path = Box::leak(format!("./{file}").into_boxed_str());
        control_entries.push(if content.starts_with("#!") {
            Entry::Exec(path, content.as_bytes())
        } else {
            Entry::File(path, content.as_bytes())
        });
    }
    let control_tar = tar_gz(&control_entries);
    let data_tar = tar_gz(data);
    kiln_dpkg::ar::write(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &control_tar),
        ("data.tar.gz", &data_tar),
    ])
}

/// Writes `bytes` to `dir/<name>.deb` and describes it.
pub fn write_deb(dir: &std::path::Path, name: &str, bytes: &[u8]) -> kiln_dpkg::DebFile {
    let path = dir.join(format!("{name}_1.0_all.deb"));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap();
    kiln_dpkg::DebFile {
        name: name.to_owned(),
        path,
        essential: false,
        data_cache: None,
    }
}

#[test]
fn read_deb_reads_control_and_locates_data() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = deb(
        "hello",
        &[
            ("conffiles", "/etc/a\nremove-on-upgrade /etc/old\n/etc/b\n"),
            ("postinst", "#!/bin/sh\n"),
        ],
        &[Entry::Dir("./"), Entry::File("./hello", b"hi")],
    );
    let file = write_deb(dir.path(), "hello", &bytes);
    let deb = kiln_dpkg::read_deb(&file.path).unwrap();
    assert_eq!(deb.name(), "hello");
    assert_eq!(deb.version(), "1.0");
    assert_eq!(deb.info_name(), "hello");
    assert_eq!(deb.conffiles(), ["/etc/a", "/etc/b"]);
    assert_eq!(deb.control_file("postinst"), Some(&b"#!/bin/sh\n"[..]));
    assert_eq!(deb.data_member, "data.tar.gz");
    assert_eq!(deb.data_compression, kiln_dpkg::Compression::Gzip);
    let mut data = tar::Archive::new(deb.data_reader().unwrap());
    let names: Vec<String> = data
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["./", "./hello"]);

    // Not a .deb: the error names the file and the reason.
    let bad = dir.path().join("bad.deb");
    std::fs::write(&bad, kiln_dpkg::ar::write(&[("debian-binary", b"3.0\n")])).unwrap();
    let error = kiln_dpkg::read_deb(&bad).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "Failed to read `{}` as a Debian package: expected `debian-binary`, `control.tar*` and `data.tar*` members, found [\"debian-binary\"]",
            bad.display()
        )
    );
}
