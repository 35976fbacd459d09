//! Quantized weights handed to tract already packed in its block formats.
//!
//! tract's own import keeps neither of our quantized layers as it should: it
//! packs every 4-bit `MatMulNBits` table while typing the model, holding the
//! ONNX tables alive until typing ends (load peak twice the weights), and it
//! runs int8 `DequantizeLinear → MatMul` as written, dequantizing every weight
//! to fp32 on every call (0.9 tok/s for a 124 M model). Both are packed here,
//! one weight at a time before typing, each ONNX table freed as soon as its
//! packed copy exists: 4-bit as Q4_0, int8 as Q8_1 (the export's codes and
//! column scales as they are; only the scale is rounded to f16).

use std::boxed::Box;
use std::collections::HashMap;
use std::format;
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use tract_linalg::block_quant::{BlockQuant, BlockQuantFact, BlockQuantStorage, NibbleWriter, Q4_0, Q8_1};
use tract_linalg::mmm::{MmmDispatch, Query};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};
use tract_onnx::prelude::{f16, Blob, InferenceModel, Tensor, TractResult, TypedModel};
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_hir::internal::*;

/// How the ONNX file stores a weight that tract can take packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `MatMulNBits`: `[N, K/2]` bytes, two 4-bit codes each (offset 8), one
    /// scale per 32 along K.
    Nibbles,
    /// `DequantizeLinear(axis=1)`: `[K, N]` int8 codes, one scale per column.
    Int8,
}

impl Layout {
    fn format(self) -> Box<dyn BlockQuant> {
        match self {
            Layout::Nibbles => Box::new(Q4_0),
            Layout::Int8 => Box::new(Q8_1),
        }
    }

    /// The weight as `[N, K]` blocks of 32 along K, or `None` when this
    /// layout cannot hold it without changing more than the scale's rounding.
    fn pack(self, table: &Tensor, scales: &Tensor, n: usize, k: usize) -> TractResult<Option<Blob>> {
        let scales = scales.cast_to::<f32>()?;
        let scales = scales.try_as_plain_ram()?;
        let (table, scales) = (table.try_as_plain_ram()?, scales.as_slice::<f32>()?);
        match self {
            Layout::Nibbles => Ok(Some(Q4_0.pack_prequantized_nibbles(table.as_slice::<u8>()?, scales, n, k)?)),
            Layout::Int8 if scales.iter().all(|s| *s == 0.0 || f16::from_f32(*s).is_normal()) => {
                Ok(Some(q8_1_blocks(table.as_slice::<i8>()?, scales, n, k)?))
            }
            // A scale outside f16's normal range would lose digits (or every code).
            Layout::Int8 => Ok(None),
        }
    }
}

/// Q8_1 blocks (f16 scale, f16 sum, 32 codes) straight from `[K, N]` codes
/// and one scale per column: row `n` of the result is column `n` of the table.
fn q8_1_blocks(codes: &[i8], scales: &[f32], n: usize, k: usize) -> TractResult<Blob> {
    const QK: usize = 32;
    ensure!(k.is_multiple_of(QK) && codes.len() == n * k && scales.len() == n);
    let bytes = n * k / QK * Q8_1.block_bytes();
    // SAFETY: every byte is written below, `bytes` being exactly the blocks' size.
    let mut blob = unsafe { Blob::for_layout(std::alloc::Layout::from_size_align(bytes, 128)?) };
    let mut writer = NibbleWriter::for_slice(&mut blob);
    for (col, scale) in scales.iter().enumerate() {
        for block in 0..k / QK {
            let block: Vec<i8> = (0..QK).map(|i| codes[(block * QK + i) * n + col]).collect();
            let sum: i32 = block.iter().map(|&q| q as i32).sum();
            writer.write_f16(f16::from_f32(*scale));
            writer.write_f16(f16::from_f32(*scale * sum as f32));
            block.iter().for_each(|&q| writer.write_i8(q));
        }
    }
    Ok(blob)
}

/// One matrix product of the ONNX graph whose weight is packed before typing.
struct Candidate<'g> {
    layout: Layout,
    /// The node replaced by the packed product.
    matmul: &'g str,
    /// The node whose inputs 0 and 1 are the table and the scales after `skip`.
    holder: &'g str,
    skip: usize,
    n: usize,
    k: usize,
}

/// Who reads each tensor of the graph: (node, input slot); graph outputs count as readers.
fn readers(graph: &GraphProto) -> HashMap<&str, Vec<(Option<&NodeProto>, usize)>> {
    let mut readers: HashMap<&str, Vec<_>> = HashMap::new();
    for node in &graph.node {
        for (slot, input) in node.input.iter().enumerate().filter(|(_, i)| !i.is_empty()) {
            readers.entry(input.as_str()).or_default().push((Some(node), slot));
        }
    }
    for output in &graph.output {
        readers.entry(output.name.as_str()).or_default().push((None, 0));
    }
    readers
}

/// The 4-bit `MatMulNBits` that Q4_0 holds as they are: 4 bits, blocks of 32, no zero points, no bias.
fn nibble_candidate<'g>(node: &'g NodeProto) -> Option<Candidate<'g>> {
    let int = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i as usize);
    let (k, n) = (int("K")?, int("N")?);
    let simple = int("bits").unwrap_or(4) == 4
        && int("block_size") == Some(32)
        && k % 32 == 0
        && node.input.iter().skip(3).all(String::is_empty);
    simple.then_some(Candidate { layout: Layout::Nibbles, matmul: &node.name, holder: &node.name, skip: 1, n, k })
}

/// `DequantizeLinear(int8 [K, N], f32 scale [N], axis=1)` feeding only the B
/// input of one `MatMul`, with K a multiple of Q8_1's block.
fn int8_candidate<'g>(
    dq: &'g NodeProto,
    inits: &HashMap<&str, &'g TensorProto>,
    readers: &HashMap<&str, Vec<(Option<&'g NodeProto>, usize)>>,
) -> Option<Candidate<'g>> {
    let axis = dq.attribute.iter().find(|a| a.name == "axis").map_or(1, |a| a.i);
    let no_zero_point = dq.input.iter().skip(2).all(String::is_empty);
    let (table, scales) = (inits.get(dq.input.first()?.as_str())?, inits.get(dq.input.get(1)?.as_str())?);
    let [k, n] = table.dims[..] else { return None };
    let (k, n) = (usize::try_from(k).ok()?, usize::try_from(n).ok()?);
    let shapes = table.data_type == DataType::Int8 as i32
        && scales.data_type == DataType::Float as i32
        && scales.dims[..] == [n as i64]
        && k % 32 == 0;
    let &[(Some(matmul), 1)] = readers.get(dq.output.first()?.as_str())?.as_slice() else { return None };
    let ok = axis == 1 && no_zero_point && shapes && matmul.op_type == "MatMul" && !matmul.name.is_empty();
    ok.then_some(Candidate { layout: Layout::Int8, matmul: &matmul.name, holder: &dq.name, skip: 0, n, k })
}

/// Whether this build of tract can multiply by a Q8_1 weight at all: it has
/// no Q8_1 kernel, only the panel extractor registered below.
fn q8_1_runs_here() -> bool {
    let query = Query {
        weight: Q8_1.into(),
        activation: f32::datum_type(),
        accumulators: tvec![f32::datum_type()],
        store: None,
        allow_extractor: true,
        m: None,
        k: None,
        n: None,
    };
    !MmmDispatch::native().suitable(&query).is_empty()
}

/// Packs every weight that a tract block format holds as it is, one at a
/// time, freeing each ONNX table as soon as its packed copy exists. The others
/// keep tract's own import.
pub(super) fn prepack(graph: &GraphProto, model: &mut InferenceModel) -> TractResult<()> {
    let inits: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let readers = readers(graph);
    let int8 = q8_1_runs_here();
    let candidates = graph.node.iter().filter_map(|node| match node.op_type.as_str() {
        "MatMulNBits" => nibble_candidate(node),
        "DequantizeLinear" if int8 => int8_candidate(node, &inits, &readers),
        _ => None,
    });
    for c in candidates {
        let holder = model.node_id_by_name(c.holder)?;
        let (table, scales) = (model.node(holder).inputs[c.skip], model.node(holder).inputs[c.skip + 1]);
        let konst = |m: &InferenceModel, o: OutletId| {
            m.node(o.node)
                .op_as::<Const>()
                .map(|c| c.val().clone())
                .with_context(|| format!("`{}`: input {} must be a constant", c.holder, m.node(o.node).name))
        };
        let (table_values, scale_values) = (konst(model, table)?, konst(model, scales)?);
        let Some(blob) = c.layout.pack(&table_values, &scale_values, c.n, c.k)? else { continue };
        let weight = BlockQuantStorage::new(c.layout.format(), c.n, c.k, Arc::new(blob))?
            .into_tensor_with_shape(f32::datum_type(), &[1, c.n, c.k]);
        // A table read only here is now referenced by its node alone: a
        // stand-in one row long frees it (same type and other axes, so that
        // the dead DequantizeLinear still types, whether or not its scales
        // were replaced too). tract shares one node between equal initializers (a tied
        // lm_head's scales are the embedding's), so other readers keep theirs.
        for (outlet, values) in [(table, table_values), (scales, scale_values)] {
            if model.node(outlet.node).outputs[outlet.slot].successors.len() > 1 {
                continue;
            }
            let mut shape = values.shape().to_vec();
            shape[0] = 1;
            let stub = Tensor::zero_dt(values.datum_type(), &shape)?;
            model.node_mut(outlet.node).op = Box::new(Const::new(stub.clone().into_arc_tensor())?);
            model.set_outlet_fact(outlet, InferenceFact::from(stub))?;
        }
        let matmul = model.node_id_by_name(c.matmul)?;
        model.node_mut(matmul).op = expand(PackedMatMul { layout: c.layout, n: c.n, k: c.k, weight: Arc::new(weight) });
    }
    Ok(())
}

/// `Y = A · Wᵀ` with W already packed `[N, K]`; the ONNX weight input is left unconnected.
#[derive(Debug, Clone)]
struct PackedMatMul {
    layout: Layout,
    n: usize,
    k: usize,
    weight: Arc<Tensor>,
}

impl Expansion for PackedMatMul {
    fn name(&self) -> StaticName {
        format!("PackedMatMul({:?})", self.layout.format()).into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        let n = self.n.to_dim();
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            s.equals(&outputs[0].rank, rank as i64)?;
            for ax in 0..rank - 1 {
                s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
            }
            s.equals(&outputs[0].shape[rank - 1], n.clone())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        let (dt, rank) = (fact.datum_type, fact.rank());
        // tract reaches Q8_1 only through the extractor, and picks a kernel
        // that way only while the token count is symbolic: with a fixed one it
        // hands the blocks to an f32 packer, which panics. Such a graph gets
        // the weight widened to f32 once, here.
        let fixed = fact.shape.iter().take(rank - 1).all(|d| d.to_i64().is_ok());
        let konst = if self.layout == Layout::Int8 && fixed {
            let blocks = self.weight.try_storage_as::<BlockQuantStorage>()?.value();
            Const::new(Q8_1.dequant_f32(blocks)?.into_shape(&[1, self.n, self.k])?.into_arc_tensor())?
        } else {
            let format = self.layout.format();
            let exotic = Box::new(BlockQuantFact::new(format, [1, self.n, self.k].into_iter().collect()));
            Const::new_with_exotic_fact(self.weight.clone(), exotic)?
        };
        let a = model.wire_node(format!("{prefix}.cast_a"), cast(f32::datum_type()), &[inputs[0]])?[0];
        let w = model.wire_node(format!("{prefix}.weight"), konst, &[])?[0];
        let lead: String = "abcdefgh".chars().take(rank - 1).collect();
        let axes = AxesMapping::from_strs(&[format!("{lead}k"), "gnk".to_string()], &[format!("{lead}n")])?;
        let y = model.wire_node(format!("{prefix}.matmul"), EinSum::new(axes, f32::datum_type()), &[a, w])?[0];
        model.wire_node(format!("{prefix}.cast_y"), cast(dt), &[y])
    }
}

/// tract 0.23 has matmul kernels for Q4_0 weights but none for Q8_1, and no
/// panel extractor from it: this one widens a packed panel of 32 rows to the
/// f32 panel its 32-row kernels read (32x1 while decoding, 32x3 for prompts).
/// The weights stay 8-bit in RAM and become f32 one panel at a time, in cache.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod q8_1_extractor {
    use std::boxed::Box;
    use std::string::ToString;

    use tract_linalg::block_quant::{BlockQuant, PackedBlockQuantFormat, Q8_1};
    use tract_linalg::isa::{Arch, IsaReq};
    use tract_linalg::mmm::PanelExtractor;
    use tract_linalg::mmm_routines::MmmExtractor;
    use tract_linalg::pack::Packing;
    use tract_onnx::prelude::f16;

    /// Panel width and alignment of the f32 kernels it feeds.
    const R: usize = 32;
    #[cfg(target_arch = "x86_64")]
    const KERNELS: (Arch, usize) = (Arch::X86_64, 256);
    #[cfg(target_arch = "aarch64")]
    const KERNELS: (Arch, usize) = (Arch::Aarch64, 16);

    inventory::submit! { MmmExtractor { target: KERNELS.0, make: extractor } }

    fn extractor() -> PanelExtractor {
        PanelExtractor {
            name: "q8_1_32_to_f32".to_string(),
            from: Box::new(PackedBlockQuantFormat::new(&Q8_1, R, 0, false)),
            to: f32::packing(R).align(KERNELS.1),
            kernel: widen,
            built: true,
            isa: IsaReq::ANY,
        }
    }

    /// A Q8_1 panel is, per block of 32 along K, the 32 rows' (f16 scale,
    /// f16 sum) then the codes K-major; the f32 panel is K-major too.
    unsafe fn widen(input: *const u8, output: *mut u8, k: usize) {
        let block_bytes = R * Q8_1.block_bytes();
        // SAFETY: tract passes one whole packed panel and a scratch panel of k × R f32.
        let (input, output) = unsafe {
            (
                std::slice::from_raw_parts(input, k / Q8_1.block_len() * block_bytes),
                std::slice::from_raw_parts_mut(output.cast::<f32>(), k * R),
            )
        };
        for (block, out) in input.chunks_exact(block_bytes).zip(output.chunks_exact_mut(Q8_1.block_len() * R)) {
            let (params, codes) = block.split_at(4 * R);
            let mut scales = [0f32; R];
            for (s, p) in scales.iter_mut().zip(params.chunks_exact(4)) {
                *s = f16::from_le_bytes([p[0], p[1]]).to_f32();
            }
            for (out, codes) in out.chunks_exact_mut(R).zip(codes.chunks_exact(R)) {
                for ((o, &q), s) in out.iter_mut().zip(codes).zip(&scales) {
                    *o = q as i8 as f32 * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{type_proto, AttributeProto, ModelProto, OperatorSetIdProto, TypeProto, ValueInfoProto};
    use tract_onnx::prelude::{InferenceModelExt, IntoTensor, TValue};

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: format!("{op}_{output}"),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        }
    }

    /// `y = a · DequantizeLinear(codes [k, n], scales [n], axis=1)`, with
    /// `also` as an extra reader of the dequantized weight when given.
    fn model(codes: &[i8], scales: &[f32], k: usize, n: usize, also: Option<&str>) -> ModelProto {
        let axis = AttributeProto { name: "axis".into(), i: 1, r#type: 2, ..Default::default() };
        let mut nodes =
            vec![node("DequantizeLinear", &["w_q", "w_s"], "w", vec![axis]), node("MatMul", &["a", "w"], "y", vec![])];
        let mut output = vec![ValueInfoProto { name: "y".into(), ..Default::default() }];
        if let Some(op) = also {
            nodes.push(node(op, &["w"], "w2", vec![]));
            output.push(ValueInfoProto { name: "w2".into(), ..Default::default() });
        }
        let table = TensorProto {
            name: "w_q".into(),
            dims: vec![k as i64, n as i64],
            data_type: DataType::Int8 as i32,
            raw_data: codes.iter().map(|&q| q as u8).collect(),
            ..Default::default()
        };
        let scale = TensorProto {
            name: "w_s".into(),
            dims: vec![n as i64],
            data_type: DataType::Float as i32,
            float_data: scales.to_vec(),
            ..Default::default()
        };
        let graph = GraphProto {
            node: nodes,
            initializer: vec![table, scale],
            input: vec![ValueInfoProto {
                name: "a".into(),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            output,
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    /// Loads with a symbolic sequence axis, as our exports have (or a fixed
    /// one, `seq`); returns how many products were packed and the outputs for
    /// `a` of each length.
    fn run(
        proto: &ModelProto,
        k: usize,
        seq: Option<usize>,
        inputs: &[Vec<f32>],
    ) -> TractResult<(usize, Vec<Vec<f32>>)> {
        let onnx = tract_onnx::onnx();
        let mut model = onnx.parse(proto, None)?.model;
        let s = seq.map_or_else(|| model.symbols.sym("S").to_dim(), |s| s.to_dim());
        model.set_input_fact(0, f32::fact(&[1.to_dim(), s, k.to_dim()]).into())?;
        prepack(proto.graph.as_ref().unwrap(), &mut model)?;
        let packed = model.nodes().iter().filter(|n| n.op.name().starts_with("PackedMatMul")).count();
        let plan = model.into_optimized()?.into_runnable()?;
        let outputs = inputs
            .iter()
            .map(|a| {
                let a = tract_ndarray::Array3::from_shape_vec((1, a.len() / k, k), a.clone())?.into_tensor();
                Ok(plan.run(tvec![TValue::from(a)])?[0].to_plain_array_view::<f32>()?.iter().copied().collect())
            })
            .collect::<TractResult<_>>()?;
        Ok((packed, outputs))
    }

    /// A fixed pseudo-random stream in [-1, 1), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn int8_packed_as_q8_1_equals_the_dequantized_product_with_f16_scales() -> TractResult<()> {
        // n = 40 leaves a partial panel of 32 rows; k = 96 is three blocks.
        let (k, n) = (96, 40);
        let codes: Vec<i8> = noise(1, k * n).iter().map(|v| (v * 127.0) as i8).collect();
        let scales: Vec<f32> = noise(2, n).iter().map(|v| 0.01 + 0.005 * v).collect();
        // Decoding (one token, the GEMV kernel) and a prompt (the matrix kernel);
        // then a fixed prompt length, which takes the weight widened to f32.
        let (decode, prompt) = (noise(3, k), noise(4, 7 * k));
        let proto = model(&codes, &scales, k, n, None);
        let (packed, mut outputs) = run(&proto, k, None, &[decode.clone(), prompt.clone()])?;
        assert_eq!(packed, 1);
        outputs.extend(run(&proto, k, Some(7), std::slice::from_ref(&prompt))?.1);
        for (a, y) in [decode, prompt.clone(), prompt].iter().zip(&outputs) {
            for (row, y) in a.chunks(k).zip(y.chunks(n)) {
                for (col, &got) in y.iter().enumerate() {
                    let scale = f16::from_f32(scales[col]).to_f32() as f64;
                    let terms = row.iter().enumerate().map(|(i, &a)| a as f64 * codes[i * n + col] as f64 * scale);
                    let (want, size) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
                    assert!((got as f64 - want).abs() <= 1e-6 * size, "column {col}: {got} vs {want}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn int8_that_q8_1_cannot_hold_as_it_is_keeps_tracts_import() -> TractResult<()> {
        let (k, n) = (64, 8);
        let codes: Vec<i8> = noise(5, k * n).iter().map(|v| (v * 127.0) as i8).collect();
        let a = [noise(6, 2 * k)];
        let ok = run(&model(&codes, &[0.01; 8], k, n, None), k, None, &a)?;
        assert_eq!(ok.0, 1);
        let cases = [
            ("a second reader", model(&codes, &[0.01; 8], k, n, Some("Identity"))),
            ("a scale below f16's normal range", model(&codes, &[1e-6; 8], k, n, None)),
            ("k not a multiple of 32", model(&codes[..48 * n], &[0.01; 8], 48, n, None)),
        ];
        for (why, proto) in cases {
            let k = proto.graph.as_ref().unwrap().initializer[0].dims[0] as usize;
            let (packed, outputs) = run(&proto, k, None, &[noise(6, 2 * k)])?;
            assert_eq!(packed, 0, "{why}");
            assert_eq!(outputs[0].len(), 2 * n, "{why}");
        }
        Ok(())
    }
}
