//! Per-record compression (`compression = "gzip" | "zstd"`): the data of
//! each record, or of each KPL aggregate, so a consumer decompresses once
//! and then de-aggregates. Pure.

use std::cell::RefCell;

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

    /// `data` compressed (or as it is, for `None`). Each thread keeps its
    /// compressor's state: setting one up costs more than compressing a
    /// log line.
    pub fn apply(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => DEFLATE
                .with(|d| gzip(&mut d.borrow_mut(), data))
                .unwrap_or_else(|| unavailable(self, data)),
            Compression::Zstd => ZSTD.with(|z| {
                let mut z = z.borrow_mut();
                let c = match z.as_mut() {
                    Some(c) => c,
                    None => match zstd::bulk::Compressor::new(ZSTD_LEVEL) {
                        Ok(c) => z.insert(c),
                        // Cannot happen for a valid level; zstd's one-shot
                        // function does the same work without the reuse.
                        Err(_) => return unavailable(self, data),
                    },
                };
                c.compress(data).unwrap_or_else(|_| unavailable(self, data))
            }),
        }
    }
}

const ZSTD_LEVEL: i32 = 1;

thread_local! {
    static DEFLATE: RefCell<flate2::Compress> =
        RefCell::new(flate2::Compress::new(flate2::Compression::default(), false));
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// A gzip member (RFC 1952): a fixed header, raw deflate from a reused
/// state, then CRC-32 and length.
/// Compressing into memory does not fail; should the reused state ever
/// fail, the one-shot encoder does the work, and should that fail too, the
/// data goes as it is (a consumer's decompression then fails loudly; the
/// line is never lost).
fn unavailable(c: Compression, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let once = match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).and_then(|()| e.finish()).ok()
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).ok(),
        Compression::None => None,
    };
    once.unwrap_or_else(|| {
        tracing::error!(
            compression = c.name(),
            "cannot compress a record; it is sent uncompressed"
        );
        data.to_vec()
    })
}

fn gzip(d: &mut flate2::Compress, data: &[u8]) -> Option<Vec<u8>> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    d.reset();
    let mut out = Vec::with_capacity(HEADER.len() + data.len() / 2 + 64);
    out.extend_from_slice(&HEADER);
    loop {
        let consumed = d.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        match d.compress_vec(
            &data[consumed.min(data.len())..],
            &mut out,
            flate2::FlushCompress::Finish,
        ) {
            Ok(flate2::Status::StreamEnd) => break,
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Some(out)
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
