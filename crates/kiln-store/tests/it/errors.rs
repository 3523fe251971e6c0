//! The text of errors and problems.

use std::path::PathBuf;

use kiln_store::{ContentDigest, Error, InputKey, Problem};

#[test]
fn digests_round_trip_through_hex() {
    let key = InputKey([0xab; 32]);
    assert_eq!(key.to_hex(), "ab".repeat(32));
    assert_eq!(InputKey::from_hex(&key.to_hex()).unwrap(), key);
    assert_eq!(key.to_string(), key.to_hex());
    assert_eq!(format!("{key:?}"), "InputKey(abababababab)");
    assert!(InputKey::from_hex("AB").is_err());
    assert!(InputKey::from_hex(&"AB".repeat(32)).is_err());
    assert!(ContentDigest::from_hex(&"g0".repeat(32)).is_err());
}

#[test]
fn messages() {
    let key = InputKey([0x11; 32]);
    let text = [
        Error::InvalidDigest { text: "xyz".into() }.to_string(),
        Error::LayerMissing { input: key }.to_string(),
        Error::LockMismatch {
            lock: InputKey([0x22; 32]),
            stage: key,
        }
        .to_string(),
        Error::MountPoint {
            path: PathBuf::from("/store/stage/1-2-3/tree/proc"),
        }
        .to_string(),
        Problem::Changed {
            input: key,
            variant: "web-amd64".into(),
            recorded: ContentDigest([0x33; 32]),
            actual: ContentDigest([0x44; 32]),
        }
        .to_string(),
    ]
    .join("\n");
    insta::assert_snapshot!(text, @r"
    Failed to parse digest `xyz`: expected 64 lower-case hexadecimal digits
    Failed to use layer `1111111111111111111111111111111111111111111111111111111111111111`: it is not in the store; build it first
    Failed to commit layer `1111111111111111111111111111111111111111111111111111111111111111`: the build lock held is for `2222222222222222222222222222222222222222222222222222222222222222`
    Failed to read tree: `/store/stage/1-2-3/tree/proc` is a mount point; unmount it before committing a layer
    layer `111111111111` (web-amd64) has changed: content digest `444444444444`, recorded `333333333333`
    ");
}
