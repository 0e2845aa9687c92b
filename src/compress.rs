//! Per-record compression (`compression = "gzip" | "zstd"`): the data of
//! each record, or of each KPL aggregate, so a consumer decompresses once
//! and then de-aggregates. Pure.

use std::io::Write;

/// How record data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// gzip (RFC 1952) at the default level: what every language reads.
    Gzip,
    /// Zstandard at level 1: the cheapest per byte.
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn is_on(self) -> bool {
        self != Compression::None
    }

    /// The most `n` bytes can grow when compressed (incompressible data is
    /// stored: gzip adds 5 bytes per 64 KiB block and 18 of framing, zstd
    /// less than 1/128 and a header). Framing and aggregation keep this
    /// much room under the record limit.
    pub fn margin(self, n: usize) -> usize {
        match self {
            Compression::None => 0,
            _ => n / 128 + 1024,
        }
    }

    /// `data` compressed (or as it is, for `None`).
    pub fn apply(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 3 + 64),
                    flate2::Compression::default(),
                );
                // Writing into a Vec cannot fail.
                let _ = e.write_all(data);
                e.finish().unwrap_or_default()
            }
            Compression::Zstd => zstd::bulk::compress(data, 1).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_within_the_margin() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i} of a log\n").into_bytes())
            .collect();
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for data in [&text[..], &noise[..], b""] {
            let gz = Compression::Gzip.apply(data);
            let mut back = Vec::new();
            assert!(
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut back)
                    .is_ok()
            );
            assert_eq!(back, data);
            let zs = Compression::Zstd.apply(data);
            assert_eq!(
                zstd::bulk::decompress(&zs, data.len().max(1))
                    .ok()
                    .as_deref(),
                Some(data)
            );
            for (c, out) in [(Compression::Gzip, &gz), (Compression::Zstd, &zs)] {
                assert!(
                    out.len() <= data.len() + c.margin(data.len()),
                    "{c:?} {} > {}",
                    out.len(),
                    data.len()
                );
            }
        }
        assert!(Compression::Zstd.apply(&text).len() * 5 < text.len());
    }
}
