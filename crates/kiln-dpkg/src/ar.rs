//! The `ar` archive format of `.deb` files: a magic line, then members with
//! a 60-byte text header each, padded to an even offset.
//!
//! Only what dpkg writes is read: no symbol tables, no BSD long names (GNU
//! `name/` terminators are accepted).

use std::io::{self, Read};

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: usize = 60;

/// One member of an `ar` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member name, `debian-binary`, `control.tar.xz`, ….
    pub name: String,
    /// Byte offset of the member's data in the archive.
    pub offset: u64,
    /// Size of the member's data.
    pub size: u64,
    /// The member's modification time, seconds since the Unix epoch:
    /// `dpkg-deb` writes the package's build date (`SOURCE_DATE_EPOCH`
    /// of its source, the changelog's date) here.
    pub mtime: i64,
}

/// Lists the members of an `ar` archive read from `reader`, skipping over
/// their data.
pub fn members(mut reader: impl Read) -> io::Result<Vec<Member>> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not an ar archive (bad magic)"));
    }
    let mut offset = MAGIC.len() as u64;
    let mut out = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header)? {
            0 => break,
            HEADER_LEN => {}
            _ => return Err(invalid("truncated member header")),
        }
        offset += HEADER_LEN as u64;
        let member = parse_header(&header, offset)?;
        let padded = member.size + (member.size & 1);
        let skipped = io::copy(&mut (&mut reader).take(padded), &mut io::sink())?;
        // The last member's padding byte is optional in practice.
        if skipped < member.size {
            return Err(invalid("truncated member data"));
        }
        offset += padded;
        out.push(member);
    }
    Ok(out)
}

fn parse_header(header: &[u8; HEADER_LEN], offset: u64) -> io::Result<Member> {
    if &header[58..60] != b"`\n" {
        return Err(invalid("bad member header terminator"));
    }
    let name = std::str::from_utf8(&header[0..16])
        .map_err(|_| invalid("member name is not UTF-8"))?
        .trim_end_matches(' ');
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || name.contains('/') {
        return Err(invalid("unsupported member name"));
    }
    let size = std::str::from_utf8(&header[48..58])
        .ok()
        .and_then(|s| s.trim_end_matches(' ').parse::<u64>().ok())
        .ok_or_else(|| invalid("bad member size"))?;
    let mtime = std::str::from_utf8(&header[16..28])
        .ok()
        .and_then(|s| s.trim_end_matches(' ').parse::<i64>().ok())
        .ok_or_else(|| invalid("bad member date"))?;
    Ok(Member {
        name: name.to_owned(),
        offset,
        size,
        mtime,
    })
}

/// The build date of the `.deb` read from `reader`: the date of its
/// first member (`debian-binary`), as `dpkg-deb` stamps every member.
pub fn build_date(mut reader: impl Read) -> io::Result<i64> {
    let mut head = [0u8; MAGIC.len() + HEADER_LEN];
    reader.read_exact(&mut head)?;
    if &head[..MAGIC.len()] != MAGIC {
        return Err(invalid("not an ar archive (bad magic)"));
    }
    let header: &[u8; HEADER_LEN] = head[MAGIC.len()..].try_into().expect("sized");
    parse_header(header, (MAGIC.len() + HEADER_LEN) as u64).map(|m| m.mtime)
}

/// Reads until `buf` is full or the end of input; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn invalid(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Writes an `ar` archive of `members` (name, data), as `dpkg-deb` does.
/// Used by tests to craft packages.
#[must_use]
pub fn write(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            1_700_000_000,
            0,
            0,
            "100644",
            data.len()
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let archive = write(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"odd"),
            ("data.tar.xz", b"even"),
        ]);
        let list = members(archive.as_slice()).unwrap();
        let names: Vec<_> = list.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["debian-binary", "control.tar.gz", "data.tar.xz"]);
        assert_eq!(list[0].offset, 68);
        assert_eq!(list[0].mtime, 1_700_000_000);
        assert_eq!(build_date(archive.as_slice()).unwrap(), 1_700_000_000);
        assert_eq!(list[0].size, 4);
        let data = &archive[list[1].offset as usize..][..list[1].size as usize];
        assert_eq!(data, b"odd");
        // Odd sizes are padded to an even offset.
        assert_eq!(list[2].offset, list[1].offset + 4 + 60);
        let data = &archive[list[2].offset as usize..][..list[2].size as usize];
        assert_eq!(data, b"even");
    }

    #[test]
    fn gnu_names_and_missing_final_padding() {
        let mut archive = write(&[("debian-binary/", b"2.0\n"), ("x", b"abc")]);
        archive.pop();
        let list = members(archive.as_slice()).unwrap();
        assert_eq!(list[0].name, "debian-binary");
        assert_eq!(list[1].size, 3);
    }

    #[test]
    fn rejects_garbage() {
        let cases: [(&[u8], &str); 4] = [
            (b"!<arch>", "failed to fill whole buffer"),
            (
                b"<arch>!\nxxxxxxxxxxxxxxxxxxxx",
                "not an ar archive (bad magic)",
            ),
            (b"!<arch>\nshort", "truncated member header"),
            (
                b"!<arch>\ndebian-binary   0           0     0     100644  x         `\n",
                "bad member size",
            ),
        ];
        let bad_date =
            b"!<arch>\ndebian-binary   yesterday   0     0     100644  4         `\n2.0\n";
        assert_eq!(
            build_date(&bad_date[..]).unwrap_err().to_string(),
            "bad member date"
        );
        for (input, expected) in cases {
            let err = members(input).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let mut truncated = write(&[("data.tar", b"0123456789")]);
        truncated.truncate(truncated.len() - 3);
        assert_eq!(
            members(truncated.as_slice()).unwrap_err().to_string(),
            "truncated member data"
        );
    }
}
