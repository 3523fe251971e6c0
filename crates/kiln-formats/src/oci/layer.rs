//! One OCI layer blob: a layer tree as a tar with OCI whiteouts, compressed,
//! with the two digests an image needs — the blob's (the manifest's layer
//! descriptor) and the uncompressed tar's (the config's `diff_ids`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_layers::LayerStack;
use sha2::{Digest as _, Sha256};

use crate::compress::{Compression, FinishWrite, compressed};
use crate::error::Error;
use crate::tar::{Whiteouts, write_tar};
use crate::tree::Tree;

/// The version of the layer tar's bytes: bump it whenever they change, so
/// cached blobs of an older writer are not reused.
pub(crate) const LAYER_VERSION: &str = "oci-layer v1";

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerBlob {
    /// The sha256 of the compressed blob.
    pub(crate) digest: [u8; 32],
    /// The sha256 of the uncompressed tar.
    pub(crate) diff_id: [u8; 32],
    /// The blob's size in bytes.
    pub(crate) size: u64,
}

/// The media type of a layer compressed with `compression` (`None` if OCI
/// has none for it).
pub(crate) fn media_type(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::None => Some("application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip { .. } => Some("application/vnd.oci.image.layer.v1.tar+gzip"),
        Compression::Zstd { .. } => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        Compression::Xz { .. } => None,
    }
}

/// Writes layer `index` of `stack` (bottom first) to the new file `dest`:
/// the bottom layer as a plain full root, any other with its own entries,
/// whiteouts and opaque directories in OCI's form.
pub(crate) fn write_layer(
    stack: &LayerStack,
    index: usize,
    epoch: i64,
    compression: Compression,
    threads: usize,
    dest: &Path,
    cancel: crate::Cancel<'_>,
) -> Result<LayerBlob, Error> {
    let upto = LayerStack::new(stack.layers[..=index].to_vec());
    let tree = if index == 0 {
        Tree::merged(&upto, epoch)?
    } else {
        Tree::layer(&upto, epoch)?
    };
    let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    let blob = Sha256Writer::new(file);
    let blob_digest = Arc::clone(&blob.state);
    let out = compressed(
        BufWriter::with_capacity(1 << 20, blob),
        compression,
        threads,
    )
    .map_err(|e| Error::io("write", dest, e))?;
    let tar = Sha256Writer::new(out);
    let tar_digest = Arc::clone(&tar.state);
    write_tar(&tree, "", Whiteouts::Oci, Box::new(tar), dest, cancel)?;
    File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", dest, e))?;
    let (digest, size) = finish(&blob_digest);
    let (diff_id, _) = finish(&tar_digest);
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
    })
}

/// The digest and length of what went through a [`Sha256Writer`].
fn finish(state: &Mutex<(Sha256, u64)>) -> ([u8; 32], u64) {
    let state = state.lock().expect("not poisoned");
    (state.0.clone().finalize().into(), state.1)
}

/// Passes bytes on to `inner` and hashes them. The state is shared because
/// the compressor owns (and drops) the writers below it.
pub(crate) struct Sha256Writer<W> {
    inner: W,
    pub(crate) state: Arc<Mutex<(Sha256, u64)>>,
}

impl<W> Sha256Writer<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            state: Arc::new(Mutex::new((Sha256::new(), 0))),
        }
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut state = self.state.lock().expect("not poisoned");
        state.0.update(&buf[..n]);
        state.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl FinishWrite for Sha256Writer<Box<dyn FinishWrite>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.inner.finish()
    }
}
