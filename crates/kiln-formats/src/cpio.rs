//! `cpio.gz`, `cpio.zst`, `overlay.cpio.gz`.
use std::path::Path;

use crate::compress::Compression;
use crate::error::Error;
use crate::{Input, Writer};

pub(crate) struct CpioWriter {
    pub(crate) compression: Compression,
    pub(crate) overlay: bool,
}

impl Writer for CpioWriter {
    fn write(&self, _input: &Input<'_>, _dest: &Path) -> Result<(), Error> {
        let _ = (self.compression, self.overlay);
        todo!()
    }
}
