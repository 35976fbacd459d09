//! Writing weights: the external data file, and linear layers and
//! embeddings at the chosen precision.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ExportError, Quant};
use crate::graph::{Attr, Elem, GraphBuilder, MS_DOMAIN};

/// The external data file's name, beside `model.onnx`.
pub const DATA_FILE: &str = "model.onnx.data";
/// Offsets of external tensors are multiples of this, so ONNX Runtime can map
/// them instead of copying.
const PAGE: u64 = 4096;
/// Tensors smaller than this stay inside model.onnx.
const INLINE_BELOW: usize = 1024;

/// A weight matrix in Hugging Face's `Linear` layout: `[out, in]`, row-major.
#[derive(Debug, Clone)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(rows * cols, data.len());
        Self { rows, cols, data }
    }

    pub fn transposed(&self) -> Mat {
        let mut data = vec![0f32; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Mat::new(self.cols, self.rows, data)
    }

    pub fn select_rows(&self, keep: &[usize]) -> Mat {
        let data = keep.iter().flat_map(|r| &self.data[r * self.cols..(r + 1) * self.cols]).copied().collect();
        Mat::new(keep.len(), self.cols, data)
    }

    pub fn select_cols(&self, keep: &[usize]) -> Mat {
        let data = (0..self.rows).flat_map(|r| keep.iter().map(move |c| self.data[r * self.cols + c])).collect();
        Mat::new(self.rows, keep.len(), data)
    }
}

/// A linear layer: `y = x · Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Lin {
    pub w: Mat,
    pub b: Option<Vec<f32>>,
    /// The weight as the checkpoint already holds it in 4 bits (GPTQ), written
    /// as it is whatever the export's precision; `w` is what it dequantizes to.
    pub packed: Option<Packed4>,
}

/// A weight in MatMulNBits' 4-bit layout: `[N, K/block, block/2]` bytes, two
/// codes each (low nibble first), one scale per block, value = (code − zero) · scale.
#[derive(Debug, Clone)]
pub struct Packed4 {
    pub n: usize,
    pub k: usize,
    pub block: usize,
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    /// Per-block zero points, two a byte, `[N, ceil(blocks/2)]`; `None`: all 8 (symmetric).
    pub zeros: Option<Vec<u8>>,
    /// The input channel each of the K rows reads (act-order GPTQ stores its
    /// groups in a permuted order); `None`: in order.
    pub perm: Option<Vec<i64>>,
}

impl Packed4 {
    /// Symmetric blocks of `w` ([`quantize_q4`]).
    pub fn quantize(w: &Mat, block: usize) -> Self {
        let (codes, scales) = quantize_q4(w, block);
        Packed4 { n: w.rows, k: w.cols, block, codes, scales, zeros: None, perm: None }
    }

    fn blocks(&self) -> usize {
        self.k / self.block
    }

    /// Output rows `keep` (a fused projection split by rows).
    pub fn select_rows(&self, keep: &[usize]) -> Self {
        let pick = |v: &[u8], width: usize| keep.iter().flat_map(|r| &v[r * width..(r + 1) * width]).copied().collect();
        let blocks = self.blocks();
        Packed4 {
            n: keep.len(),
            codes: pick(&self.codes, self.k / 2),
            scales: keep.iter().flat_map(|r| &self.scales[r * blocks..(r + 1) * blocks]).copied().collect(),
            zeros: self.zeros.as_ref().map(|z| pick(z, blocks.div_ceil(2))),
            ..self.clone()
        }
    }

    /// The `[N, K]` values it stands for, input channels in the model's order.
    pub fn dequantize(&self) -> Mat {
        let (blocks, zero_row) = (self.blocks(), self.blocks().div_ceil(2));
        let mut data = vec![0f32; self.n * self.k];
        for r in 0..self.n {
            for i in 0..self.k {
                let b = i / self.block;
                let code = (self.codes[(r * self.k + i) / 2] >> (4 * (i % 2))) & 15;
                let zero = self.zeros.as_ref().map_or(8, |z| (z[r * zero_row + b / 2] >> (4 * (b % 2))) & 15);
                let col = self.perm.as_ref().map_or(i, |p| p[i] as usize);
                data[r * self.k + col] = (f32::from(code) - f32::from(zero)) * self.scales[r * blocks + b];
            }
        }
        Mat::new(self.n, self.k, data)
    }
}

/// What went into the files, for the manifest.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub weight_bytes: u64,
    pub parameters: u64,
    pub zeros: u64,
}

/// Builds the graph and writes its weights.
pub struct Emitter {
    pub g: GraphBuilder,
    data: BufWriter<File>,
    data_path: PathBuf,
    offset: u64,
    quant: Quant,
    block: usize,
    /// MatMulNBits' `accuracy_level`: 0 keeps fp32 activations, 4 lets ONNX Runtime use int8.
    accuracy_level: i64,
    consts: HashMap<(String, Vec<u8>), String>,
    /// Inputs already gathered into a permuted order: (input, indices) → output.
    gathers: HashMap<(String, String), String>,
    pub written: Written,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Emitter {
    pub fn new(name: &str, dir: &Path, quant: Quant, block: usize, accuracy_level: i64) -> Result<Self, ExportError> {
        let data_path = dir.join(DATA_FILE);
        let file = File::create(&data_path).map_err(|e| ExportError::io(&data_path, e))?;
        Ok(Self {
            g: GraphBuilder::new(name),
            data: BufWriter::with_capacity(1 << 20, file),
            data_path,
            offset: 0,
            quant,
            block,
            accuracy_level,
            consts: HashMap::new(),
            gathers: HashMap::new(),
            written: Written::default(),
        })
    }

    /// A weight tensor: inline when small, else page-aligned in the data file.
    pub fn tensor(&mut self, name: &str, elem: Elem, dims: &[i64], raw: Vec<u8>) -> Result<String, ExportError> {
        self.written.weight_bytes += raw.len() as u64;
        if raw.len() < INLINE_BELOW {
            return Ok(self.g.raw(name, elem, dims, raw));
        }
        let err = |e| ExportError::io(&self.data_path, e);
        let aligned = self.offset.div_ceil(PAGE) * PAGE;
        if aligned > self.offset {
            self.data.write_all(&vec![0u8; (aligned - self.offset) as usize]).map_err(err)?;
        }
        self.data.write_all(&raw).map_err(err)?;
        self.offset = aligned + raw.len() as u64;
        Ok(self.g.external(name, elem, dims, DATA_FILE, aligned, raw.len() as u64))
    }

    pub fn f32s(&mut self, name: &str, dims: &[i64], v: &[f32]) -> Result<String, ExportError> {
        self.tensor(name, Elem::F32, dims, f32_bytes(v))
    }

    /// A small constant of the graph itself (shapes, scalars), shared by value.
    fn konst(&mut self, elem: Elem, dims: &[i64], raw: Vec<u8>) -> String {
        let key = (format!("{elem:?}{dims:?}"), raw);
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = format!("const_{}", self.consts.len());
        self.g.raw(&name, elem, dims, key.1.clone());
        self.consts.insert(key, name.clone());
        name
    }

    pub fn scalar(&mut self, v: f32) -> String {
        self.konst(Elem::F32, &[], v.to_le_bytes().to_vec())
    }

    pub fn int(&mut self, v: i64) -> String {
        self.konst(Elem::I64, &[], v.to_le_bytes().to_vec())
    }

    pub fn ints(&mut self, v: &[i64]) -> String {
        self.konst(Elem::I64, &[v.len() as i64], v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    pub fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.g.node(op, inputs, &[])
    }

    /// `x · Wᵀ + b` at the export's precision (a weight the checkpoint holds in 4 bits stays so).
    pub fn linear(&mut self, x: &str, name: &str, lin: &Lin) -> Result<String, ExportError> {
        let (n, k) = (lin.w.rows, lin.w.cols);
        self.written.parameters += (n * k + lin.b.as_ref().map_or(0, Vec::len)) as u64;
        self.written.zeros += lin.w.data.iter().filter(|v| **v == 0.0).count() as u64;
        let y = match (&lin.packed, self.quant) {
            (Some(packed), _) => self.nbits(x, name, packed)?,
            (None, Quant::None) => {
                let wt = self.f32s(&format!("{name}.weight"), &[k as i64, n as i64], &lin.w.transposed().data)?;
                self.op("MatMul", &[x, &wt])
            }
            (None, Quant::Int8) => {
                let (q, scales) = crate::fixtures::quantize_per_column(&lin.w.transposed().data, k, n);
                let q = self.tensor(
                    &format!("{name}.weight_q"),
                    Elem::I8,
                    &[k as i64, n as i64],
                    q.iter().map(|v| *v as u8).collect(),
                )?;
                let s = self.f32s(&format!("{name}.weight_scale"), &[n as i64], &scales)?;
                let w = self.g.node("DequantizeLinear", &[&q, &s], &[Attr::Int("axis", 1)]);
                self.op("MatMul", &[x, &w])
            }
            (None, Quant::Int4) => {
                let block = self.block;
                if k % block != 0 {
                    return Err(ExportError::Unsupported(format!(
                        "int4 with block {block}: `{name}` has inner dimension {k}, not a multiple of {block}"
                    )));
                }
                self.nbits(x, name, &Packed4::quantize(&lin.w, block))?
            }
        };
        match &lin.b {
            Some(bias) => {
                let b = self.f32s(&format!("{name}.bias"), &[n as i64], bias)?;
                Ok(self.op("Add", &[&y, &b]))
            }
            None => Ok(y),
        }
    }

    /// `com.microsoft::MatMulNBits` of `x` (its channels first put in `w.perm`'s order) by `w`.
    fn nbits(&mut self, x: &str, name: &str, w: &Packed4) -> Result<String, ExportError> {
        let (n, k, blocks) = (w.n as i64, w.k as i64, w.blocks() as i64);
        let b =
            self.tensor(&format!("{name}.weight_q4"), Elem::U8, &[n, blocks, w.block as i64 / 2], w.codes.clone())?;
        let s = self.f32s(&format!("{name}.weight_scale"), &[n * blocks], &w.scales)?;
        let mut inputs = vec![self.permuted(x, w.perm.as_deref()), b, s];
        if let Some(zeros) = &w.zeros {
            inputs.push(self.tensor(&format!("{name}.weight_zero"), Elem::U8, &[zeros.len() as i64], zeros.clone())?);
        }
        let attrs = [
            Attr::Int("K", k),
            Attr::Int("N", n),
            Attr::Int("bits", 4),
            Attr::Int("block_size", w.block as i64),
            Attr::Int("accuracy_level", self.accuracy_level),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.node_in(MS_DOMAIN, "MatMulNBits", &inputs, &attrs))
    }

    /// `x`'s last axis gathered in `perm`'s order, once per (input, order):
    /// act-order GPTQ gives the projections that read one input the same order.
    fn permuted(&mut self, x: &str, perm: Option<&[i64]>) -> String {
        let Some(perm) = perm else { return x.to_string() };
        let indices = self.ints(perm);
        let key = (x.to_string(), indices.clone());
        if let Some(y) = self.gathers.get(&key) {
            return y.clone();
        }
        let y = self.g.node("Gather", &[x, &indices], &[Attr::Int("axis", -1)]);
        self.gathers.insert(key, y.clone());
        y
    }

    /// Rows of `table` picked by `ids`. Quantized exports keep the table in
    /// int8 with one scale per row: only the picked rows are dequantized.
    pub fn embedding(&mut self, ids: &str, name: &str, table: &Mat, quantize: bool) -> Result<String, ExportError> {
        self.written.parameters += table.data.len() as u64;
        let dims = [table.rows as i64, table.cols as i64];
        if self.quant == Quant::None || !quantize {
            let t = self.f32s(name, &dims, &table.data)?;
            return Ok(self.g.node("Gather", &[&t, ids], &[Attr::Int("axis", 0)]));
        }
        let scales: Vec<f32> = table
            .data
            .chunks_exact(table.cols)
            .map(|row| row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
            .map(|s| if s == 0.0 { 1.0 } else { s })
            .collect();
        let raw =
            table.data.iter().enumerate().map(|(i, v)| (v / scales[i / table.cols]).round() as i8 as u8).collect();
        let q = self.tensor(&format!("{name}_q"), Elem::I8, &dims, raw)?;
        let s = self.f32s(&format!("{name}_scale"), &[table.rows as i64], &scales)?;
        let rows = self.g.node("Gather", &[&q, ids], &[Attr::Int("axis", 0)]);
        let rows = self.g.node("Cast", &[&rows], &[Attr::Int("to", 1)]);
        let row_scale = self.g.node("Gather", &[&s, ids], &[Attr::Int("axis", 0)]);
        let last = self.ints(&[-1]);
        let row_scale = self.op("Unsqueeze", &[&row_scale, &last]);
        Ok(self.op("Mul", &[&rows, &row_scale]))
    }

    /// Flushes the data file to disk and gives the model and what was written.
    pub fn finish(mut self) -> Result<(tract_onnx::pb::ModelProto, Written), ExportError> {
        let err = |path: &Path, e| ExportError::io(path, e);
        self.data.flush().map_err(|e| err(&self.data_path, e))?;
        let file = self.data.into_inner().map_err(|e| err(&self.data_path, e.into_error()))?;
        file.sync_all().map_err(|e| err(&self.data_path, e))?;
        Ok((self.g.build(), self.written))
    }
}

/// Q4_0-style blocks along each row's inner dimension: the value of largest
/// magnitude maps to code 0, scale = that value / -8, code = round(v / scale) + 8,
/// two codes a byte, low nibble first (ONNX Runtime's MatMulNBits layout,
/// which tract reads as Q4_0 when the block is 32).
pub fn quantize_q4(w: &Mat, block: usize) -> (Vec<u8>, Vec<f32>) {
    let blocks = w.cols / block;
    let mut packed = Vec::with_capacity(w.rows * blocks * block / 2);
    let mut scales = Vec::with_capacity(w.rows * blocks);
    for r in 0..w.rows {
        for b in 0..blocks {
            let vals = &w.data[r * w.cols + b * block..r * w.cols + (b + 1) * block];
            let max = vals.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let scale = if max == 0.0 { 1.0 } else { max / -8.0 };
            scales.push(scale);
            let code = |v: f32| ((v / scale).round() + 8.0).clamp(0.0, 15.0) as u8;
            packed.extend(vals.chunks_exact(2).map(|p| code(p[0]) | (code(p[1]) << 4)));
        }
    }
    (packed, scales)
}

/// What a Q4 block decodes to, for tests and error bounds.
pub fn dequantize_q4(packed: &[u8], scales: &[f32], rows: usize, cols: usize, block: usize) -> Mat {
    let mut data = Vec::with_capacity(rows * cols);
    for (i, byte) in packed.iter().enumerate() {
        let scale = scales[i * 2 / block];
        data.push((f32::from(byte & 15) - 8.0) * scale);
        data.push((f32::from(byte >> 4) - 8.0) * scale);
    }
    Mat::new(rows, cols, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_round_trips_within_half_a_step_and_keeps_the_extreme_exact() {
        let data: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 30.0) / 10.0).collect();
        let w = Mat::new(2, 32, data);
        let (packed, scales) = quantize_q4(&w, 32);
        assert_eq!((packed.len(), scales.len()), (32, 2));
        let back = dequantize_q4(&packed, &scales, 2, 32, 32);
        for (r, scale) in scales.iter().enumerate() {
            let s = scale.abs();
            for c in 0..32 {
                let (a, b) = (w.data[r * 32 + c], back.data[r * 32 + c]);
                assert!((a - b).abs() <= s / 2.0 + 1e-6, "row {r} col {c}: {a} vs {b}, step {s}");
            }
        }
        // The value of largest magnitude in each row's block is the scale's anchor: it decodes exactly.
        for r in 0..2 {
            let row = &w.data[r * 32..(r + 1) * 32];
            let extreme = row.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            assert!(back.data[r * 32..(r + 1) * 32].iter().any(|v| (v - extreme).abs() < 1e-6), "row {r}: {extreme}");
        }
    }

    #[test]
    fn transpose_and_selection() {
        let m = Mat::new(2, 3, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(m.transposed().data, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(m.select_rows(&[1]).data, vec![4., 5., 6.]);
        assert_eq!(m.select_cols(&[0, 2]).data, vec![1., 3., 4., 6.]);
    }
}
