//! Minimal `.npy` (NumPy format 1.0, little-endian, C order) writer for u8 and f32 arrays, so the
//! trainer's golden inputs and the device's `preprocess --out x.npy` open in NumPy.

use std::format;
use std::string::String;
use std::vec::Vec;

/// Element types that can be written.
pub trait NpyElement: Copy {
    /// NumPy `descr`.
    const DESCR: &'static str;
    fn extend_le(self, out: &mut Vec<u8>);
}

impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    fn extend_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn extend_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// The bytes of a `.npy` file holding `data` with `shape`; `None` when they do not match.
pub fn to_npy<T: NpyElement>(shape: &[usize], data: &[T]) -> Option<Vec<u8>> {
    if shape.iter().product::<usize>() != data.len() {
        return None;
    }
    let dims: Vec<String> = shape.iter().map(|d| format!("{d}")).collect();
    let trailing = if shape.len() == 1 { "," } else { "" };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({}{trailing}), }}",
        T::DESCR,
        dims.join(", ")
    );
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + core::mem::size_of_val(data));
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &v in data {
        v.extend_le(&mut bytes);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_64_byte_aligned_and_shape_checked() {
        let b = to_npy(&[1, 3, 2, 2], &[0.5f32; 12]).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b.len(), 10 + hlen + 48);
        assert!(std::str::from_utf8(&b[10..10 + hlen])
            .unwrap()
            .contains("'shape': (1, 3, 2, 2)"));
        let u = to_npy(&[5], &[7u8; 5]).unwrap();
        assert!(u.ends_with(&[7; 5]) && u.windows(3).any(|w| w == b"|u1"));
        assert!(to_npy(&[2], &[0.5f32; 3]).is_none());
    }
}
