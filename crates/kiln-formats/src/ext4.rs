//! `ext4`.

use std::path::Path;

use crate::error::Error;
use crate::{Input, Writer};

/// Options of an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ext4Options {
    /// A fixed size in bytes; `None` for `auto` (content plus headroom).
    pub size: Option<u64>,
    /// Free space added to the content with `auto` (`None`: the default).
    pub headroom: Option<u64>,
    /// The filesystem label.
    pub label: Option<String>,
}

impl Ext4Options {
    pub(crate) fn identity(&self) -> String {
        format!(
            "v0 size={:?} headroom={:?} label={:?}",
            self.size, self.headroom, self.label
        )
    }
}

pub(crate) struct Ext4Writer {
    pub(crate) options: Ext4Options,
}

impl Writer for Ext4Writer {
    fn write(&self, _input: &Input<'_>, _dest: &Path) -> Result<(), Error> {
        let _ = &self.options;
        Err(Error::Unsupported {
            format: "ext4",
            path: String::new(),
            reason: "being written (placeholder until the ext4 writer lands)".into(),
        })
    }
}
