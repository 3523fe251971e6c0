//! `tar`, `tar.gz`, `tar.zst`, `tar.xz`.
use std::path::Path;

use crate::compress::Compression;
use crate::error::Error;
use crate::{Input, Writer};

pub(crate) struct TarWriter {
    pub(crate) compression: Compression,
}

impl Writer for TarWriter {
    fn write(&self, _input: &Input<'_>, _dest: &Path) -> Result<(), Error> {
        let _ = self.compression;
        todo!()
    }
}
