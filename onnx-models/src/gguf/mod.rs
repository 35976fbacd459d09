//! GGUF files, llama.cpp's format: a header, typed metadata, tensor infos
//! and the tensor data, memory-mapped as the safetensors path is.
//!
//! Tensors are dequantized to fp32 one at a time ([`GgufFile::read_f32`]),
//! their pages released afterwards, so reading a whole model never holds
//! more than one tensor of it resident. [`model::GgufModel`] reads a Llama
//! file into the exporter's configuration and Hugging Face's tensor names;
//! [`tokenizer`] turns the vocabulary in the metadata into a `tokenizer.json`.

pub mod model;
pub mod tokenizer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use memmap2::UncheckedAdvice;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// the file could not be read
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// the header, metadata or tensor infos are not valid GGUF
    #[error("{path}: not a valid GGUF file: {message}")]
    Format { path: PathBuf, message: String },
    /// the configuration the metadata gives is not one export can build (the message names the key)
    #[error("{path}: metadata: {message}")]
    Config { path: PathBuf, message: String },
    /// a metadata key is missing or has a value export does not follow
    #[error("{path}: metadata `{key}`: {message}")]
    Key { path: PathBuf, key: String, message: String },
    /// a tensor is missing, out of the file or of the wrong shape
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    /// a tensor's type is not one edgehil dequantizes
    #[error(
        "{path}: tensor `{tensor}` is {ggml_type}; edgehil reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K to Q6_K (re-quantize the file to one of them, e.g. with llama-quantize)"
    )]
    TensorType { path: PathBuf, tensor: String, ggml_type: GgmlType },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// A whole number of at least 0, of any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A number of any type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's element type (`ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q5_0: Self = Self(6);
    pub const Q5_1: Self = Self(7);
    pub const Q8_0: Self = Self(8);
    pub const Q2_K: Self = Self(10);
    pub const Q3_K: Self = Self(11);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const Q6_K: Self = Self(14);
    pub const BF16: Self = Self(30);

    /// The name llama.cpp gives the type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            34 => "TQ1_0",
            35 => "TQ2_0",
            _ => return None,
        })
    }

    /// [`dequantize`] reads it.
    pub fn readable(self) -> bool {
        [
            Self::F32,
            Self::F16,
            Self::BF16,
            Self::Q8_0,
            Self::Q4_0,
            Self::Q4_1,
            Self::Q5_0,
            Self::Q5_1,
            Self::Q2_K,
            Self::Q3_K,
            Self::Q4_K,
            Self::Q5_K,
            Self::Q6_K,
        ]
        .contains(&self)
    }

    /// (elements, bytes) of one block; `None` for a type whose layout is not known here.
    fn block(self) -> Option<(u64, u64)> {
        Some(match self.0 {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            6 => (32, 22),
            7 => (32, 24),
            8 => (32, 34),
            9 => (32, 36),
            10 => (256, 84),
            11 => (256, 110),
            12 => (256, 144),
            13 => (256, 176),
            14 => (256, 210),
            15 => (256, 292),
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ggml type {}", self.0),
        }
    }
}

/// A tensor's entry in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions innermost first (ggml's `ne`): a `[rows, cols]` matrix is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape outermost first, as Hugging Face and ONNX write it.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    fn elements(&self) -> Option<u64> {
        crate::hf::elements(&self.dims)
    }
}

/// The data section starts at a multiple of this unless `general.alignment` says otherwise.
const DEFAULT_ALIGNMENT: u64 = 32;

/// An opened GGUF file: metadata and tensor infos parsed, the data mapped.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    data_start: u64,
}

/// Reads the header's little-endian values, every read checked against the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: String) -> GgufError {
        GgufError::Format { path: self.path.into(), message }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(format!(
                "{what} at byte {} needs {n} bytes, the file ends at {}",
                self.pos,
                self.bytes.len()
            )));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("length taken"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error(format!("{what} is not UTF-8")))
    }

    /// A count of items of at least `min_bytes` each, bounded by the bytes left (so a damaged
    /// count is an error, not a huge allocation).
    fn count(&mut self, what: &str, min_bytes: u64) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes) > left {
            return Err(self.error(format!("{what} = {n} does not fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn value(&mut self, kind: u32, what: &str) -> Result<Value, GgufError> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.error(format!("{what}: boolean byte {b}, expected 0 or 1"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                let item = self.u32(what)?;
                if item == 9 {
                    return Err(self.error(format!("{what}: arrays of arrays are not supported")));
                }
                let n = self.count(what, 1)?;
                (0..n).map(|_| self.value(item, what)).collect::<Result<_, _>>().map(Value::Array)?
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.error(format!("{what}: value type {other}, expected 0 to 12"))),
        })
    }
}

impl GgufFile {
    /// Opens `path`: the header, metadata and tensor infos parsed and every
    /// tensor of a known type held against the file's size.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |cause| GgufError::Io { path: path.into(), cause };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file changed underneath would only give wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let mut c = Cursor { bytes: &map, pos: 0, path };
        let magic = c.take(4, "the magic")?;
        if magic != b"GGUF" {
            return Err(c.error(format!(
                "starts with {magic:?}, expected \"GGUF\" (export reads a Hugging Face folder or a GGUF file)"
            )));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(c.error(format!("version {version}, expected 2 or 3")));
        }
        // A tensor info takes at least 24 bytes, a metadata entry at least 13.
        let n_tensors = c.count("the tensor count", 24)?;
        let n_kv = c.count("the metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let kind = c.u32(&key)?;
            let value = c.value(kind, &format!("metadata `{key}`"))?;
            metadata.push((key, value));
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&format!("the name of tensor {i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = c.u32(&what)?;
            if n_dims > 4 {
                return Err(c.error(format!("{what} has {n_dims} dimensions, expected at most 4")));
            }
            let dims = (0..n_dims).map(|_| c.u64(&what)).collect::<Result<Vec<_>, _>>()?;
            let ggml_type = GgmlType(c.u32(&what)?);
            let offset = c.u64(&what)?;
            if index.insert(name.clone(), i).is_some() {
                return Err(c.error(format!("{what} appears twice")));
            }
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let header_end = c.pos as u64;
        let mut gguf = Self { path: path.into(), map, metadata, tensors, index, data_start: 0 };
        let alignment = match gguf.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| gguf.key_error("general.alignment", format!("{v:?}: expected a power of two")))?,
        };
        gguf.data_start = header_end.div_ceil(alignment) * alignment;
        for t in &gguf.tensors {
            gguf.bytes_of(t, alignment)?;
        }
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(crate) fn key_error(&self, key: &str, message: String) -> GgufError {
        GgufError::Key { path: self.path.clone(), key: key.into(), message }
    }

    /// The value of `key` that `read` accepts, or an error naming the key and `expected`.
    pub(crate) fn require<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        read: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        match self.get(key) {
            None => Err(self.key_error(key, format!("missing, expected {expected}"))),
            Some(v) => read(v).ok_or_else(|| self.key_error(key, format!("{}: expected {expected}", short(v)))),
        }
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|i| &self.tensors[*i])
    }

    /// An error when tensor `t` is of a type [`dequantize`] does not read.
    pub(crate) fn check_readable(&self, t: &TensorInfo) -> Result<(), GgufError> {
        if t.ggml_type.readable() {
            return Ok(());
        }
        Err(GgufError::TensorType { path: self.path.clone(), tensor: t.name.clone(), ggml_type: t.ggml_type })
    }

    fn tensor_error(&self, tensor: &str, message: String) -> GgufError {
        GgufError::Tensor { path: self.path.clone(), tensor: tensor.into(), message }
    }

    /// The byte range of `t` in the map; `None` for a type whose layout is not known here.
    fn bytes_of(&self, t: &TensorInfo, alignment: u64) -> Result<Option<std::ops::Range<usize>>, GgufError> {
        let Some((block_elems, block_bytes)) = t.ggml_type.block() else { return Ok(None) };
        let err = |message: String| self.tensor_error(&t.name, message);
        let n = t.elements().ok_or_else(|| err(format!("dimensions {:?} overflow 64 bits", t.dims)))?;
        let row = t.dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(block_elems) {
            return Err(err(format!(
                "{} rows of {row} values: expected a multiple of its block of {block_elems}",
                t.ggml_type
            )));
        }
        if !t.offset.is_multiple_of(alignment) {
            return Err(err(format!("offset {} is not a multiple of the alignment {alignment}", t.offset)));
        }
        let len = n / block_elems * block_bytes;
        let start = self.data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(len)).filter(|e| *e <= self.map.len() as u64);
        match (start, end) {
            (Some(s), Some(e)) => Ok(Some(s as usize..e as usize)),
            _ => Err(err(format!(
                "{len} bytes at offset {} from the data start {} run past the end of the file ({} bytes)",
                t.offset,
                self.data_start,
                self.map.len()
            ))),
        }
    }

    /// Tensor `name` as fp32 values in its stored order (a matrix row by row), dequantized.
    /// Its pages of the map are released afterwards.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self.tensor(name).ok_or_else(|| self.tensor_error(name, "missing".into()))?;
        self.check_readable(t)?;
        // Alignment was checked at open; every readable type has a known layout.
        let range = self.bytes_of(t, 1)?.expect("a readable type's layout");
        let bytes = &self.map[range.clone()];
        let values = dequantize(t.ggml_type, bytes).expect("a readable type");
        // SAFETY: the map is private and read-only; dropped pages are read back from the file if touched again.
        // Failing to drop them only costs memory, so the result is ignored.
        let _ = unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, range.start, range.len()) };
        Ok(values)
    }
}

/// A value for a message: arrays by their length.
fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// `bytes` of `kind` as fp32, as llama.cpp's `dequantize_row_*` computes them;
/// `None` for a type not read here.
pub fn dequantize(kind: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let blocks = |size: usize| bytes.chunks_exact(size);
    Some(match kind {
        GgmlType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(f16).collect(),
        GgmlType::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        GgmlType::Q8_0 => blocks(34)
            .flat_map(|b| {
                let d = f16(b);
                b[2..].iter().map(move |q| f32::from(*q as i8) * d)
            })
            .collect(),
        // 4-bit blocks: the low nibbles are the first 16 values, the high nibbles the last 16.
        GgmlType::Q4_0 => blocks(18).flat_map(|b| nibbles(&b[2..], -8.0, f16(b), 0.0)).collect(),
        GgmlType::Q4_1 => blocks(20).flat_map(|b| nibbles(&b[4..], 0.0, f16(b), f16(&b[2..]))).collect(),
        GgmlType::Q5_0 => blocks(22).flat_map(|b| five_bits(&b[2..], -16.0, f16(b), 0.0)).collect(),
        GgmlType::Q5_1 => blocks(24).flat_map(|b| five_bits(&b[4..], 0.0, f16(b), f16(&b[2..]))).collect(),
        GgmlType::Q2_K => blocks(84).flat_map(q2_k).collect(),
        GgmlType::Q3_K => blocks(110).flat_map(q3_k).collect(),
        GgmlType::Q4_K => blocks(144).flat_map(|b| k_quant_4_5(b, None)).collect(),
        GgmlType::Q5_K => {
            blocks(176).flat_map(|b| k_quant_4_5(&[&b[..16], &b[48..]].concat(), Some(&b[16..48]))).collect()
        }
        GgmlType::Q6_K => blocks(210).flat_map(q6_k).collect(),
        _ => return None,
    })
}

/// Q5_0/Q5_1: 32 fifth bits (`qh`, little-endian) above the nibbles of [`nibbles`].
fn five_bits(b: &[u8], offset: f32, d: f32, m: f32) -> impl Iterator<Item = f32> + '_ {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let qs = &b[4..20];
    let value = move |j: usize| {
        let (q, high) = if j < 16 { (qs[j] & 0x0f, (qh >> j) & 1) } else { (qs[j - 16] >> 4, (qh >> j) & 1) };
        (f32::from(q | (high as u8) << 4) + offset) * d + m
    };
    (0..32).map(value)
}

/// The K-quants' 6-bit (scale, min) pair `j` of 8 packed in 12 bytes (llama.cpp's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    };
    (f32::from(sc), f32::from(m))
}

/// Q4_K (d, dmin, 12 bytes of scales, 128 of nibbles) and Q5_K (the same with
/// 32 bytes `qh` of fifth bits): 8 sub-blocks of 32, each `d·sc·q − dmin·m`.
fn k_quant_4_5(b: &[u8], qh: Option<&[u8]>) -> Vec<f32> {
    let (d, dmin, scales, qs) = (f16(b), f16(&b[2..]), &b[4..16], &b[16..144]);
    let mut y = Vec::with_capacity(256);
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        for half in 0..2 {
            let (sc, m) = scale_min_k4(2 * chunk + half, scales);
            let (dl, ml) = (d * sc, dmin * m);
            let bit = 1u8 << (2 * chunk + half);
            y.extend(q.iter().enumerate().map(|(l, q)| {
                let low = if half == 0 { q & 0xf } else { q >> 4 };
                let high = qh.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
                dl * f32::from(low + high) - ml
            }));
        }
    }
    y
}

/// Q2_K: 16 bytes of 4-bit (scale, min) pairs, 64 bytes of 2-bit values, d, dmin.
fn q2_k(b: &[u8]) -> Vec<f32> {
    let (scales, qs, d, dmin) = (&b[..16], &b[16..80], f16(&b[80..]), f16(&b[82..]));
    let mut y = Vec::with_capacity(256);
    let mut is = 0;
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for part in [&q[..16], &q[16..]] {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0xf), dmin * f32::from(sc >> 4));
                y.extend(part.iter().map(|q| dl * f32::from((q >> shift) & 3) - ml));
            }
        }
    }
    y
}

/// Q3_K: 32 bytes `hmask` (the third bit, inverted), 64 bytes of 2-bit values,
/// 16 signed 6-bit scales packed in 12 bytes, d.
fn q3_k(b: &[u8]) -> Vec<f32> {
    let (hmask, qs, packed, d) = (&b[..32], &b[32..96], &b[96..108], f16(&b[108..]));
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [
        (a0 & k2) | ((tmp & k1) << 4),
        (a1 & k2) | (((tmp >> 2) & k1) << 4),
        ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
        ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
    ];
    let scales: Vec<i8> = aux.iter().flat_map(|w| w.to_le_bytes()).map(|s| s as i8).collect();
    let mut y = Vec::with_capacity(256);
    let (mut is, mut m) = (0, 1u8);
    for q in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (part, hm) in [(&q[..16], &hmask[..16]), (&q[16..], &hmask[16..])] {
                let dl = d * f32::from(scales[is] - 32);
                is += 1;
                y.extend(part.iter().zip(hm).map(|(q, h)| {
                    let v = ((q >> shift) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
                    dl * f32::from(v)
                }));
            }
            m <<= 1;
        }
    }
    y
}

/// Q6_K: 128 bytes of low nibbles, 64 of 2-bit highs, 16 signed scales, d.
fn q6_k(b: &[u8]) -> Vec<f32> {
    let (ql, qh, sc, d) = (&b[..128], &b[128..192], &b[192..208], f16(&b[208..]));
    let mut y = vec![0.0f32; 256];
    for n in 0..2 {
        let (ql, qh, sc, y) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..], &mut y[128 * n..]);
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xf) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in q.into_iter().enumerate() {
                y[l + 32 * k] = d * f32::from(sc[is + 2 * k] as i8) * f32::from(q as i8 - 32);
            }
        }
    }
    y
}

/// The 32 values `(q + offset)·d + m` of a block's 16 bytes of nibbles, low nibbles first
/// (the offset added before scaling, as llama.cpp does, so the values are bit-identical).
fn nibbles(qs: &[u8], offset: f32, d: f32, m: f32) -> impl Iterator<Item = f32> + '_ {
    let lo = qs.iter().map(move |q| (f32::from(q & 0x0f) + offset) * d + m);
    let hi = qs.iter().map(move |q| (f32::from(q >> 4) + offset) * d + m);
    lo.chain(hi)
}
