//! Where photos come from: files given on the command line, a folder a camera writes into, or
//! (feature `capture`) a V4L2 camera. The device loop takes one photo per button press through
//! [`Camera`].
pub mod folder;
pub mod frame;
#[cfg(feature = "capture")]
pub mod v4l2;
pub mod watch;

/// A photo taken for one button press.
#[derive(Debug, Clone, PartialEq)]
pub struct Shot {
    /// What the record calls it: the file's path, or the saved frame's.
    pub name: String,
    /// The bytes of a JPEG or PNG file (hashed into the record, decoded by the screener).
    pub bytes: Vec<u8>,
}

/// Why no photo could be taken for a press; it becomes an ungradable record (logged, amber).
#[derive(Debug, Clone, PartialEq)]
pub struct Missed {
    /// What the record calls it: the file, folder or device that gave no photo.
    pub image: String,
    /// SHA-256 of the bytes there were, if any.
    pub sha256: Option<String>,
    /// Why, and what the operator should do next.
    pub reason: String,
}

/// Something that takes one photo when asked (after the capture button was pressed).
pub trait Camera {
    fn take(&mut self) -> Result<Shot, Missed>;
}
