//! The interpreter: checks at decode time that every op's operands have the
//! sizes its geometry reads, then runs the ops in order over the arena.

use alloc::vec::Vec;

use crate::{elements, Act, BinKind, Buffer, Const, Error, Model, Op, PoolKind, Src, Weights, Window};

type Check = Result<(), &'static str>;

fn ensure(ok: bool, what: &'static str) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

fn product(dims: &[u32]) -> Result<usize, &'static str> {
    elements(dims).ok_or("sizes overflow")
}

/// What running `op` will read and write is within its operands.
pub(crate) fn check(model: &Model, op: &Op) -> Check {
    let buf = |i: u16| model.buffers.get(usize::from(i)).copied().ok_or("buffer index out of range");
    let konst = |i: u16| model.consts.get(usize::from(i)).ok_or("constant index out of range");
    let bias = |b: Option<u16>, n: usize| match b {
        Some(b) => ensure(konst(b)?.len() == n, "bias length differs from the output channels"),
        None => Ok(()),
    };
    let disjoint = |x: Buffer, y: Buffer| {
        ensure(x.range().end <= y.offset as usize || y.range().end <= x.offset as usize, "input and output overlap")
    };
    let int8_axis = |c: &Const, axis: u8| match c.data {
        Weights::I8 { axis: a, .. } => ensure(a == axis, "int8 scales on another axis than the output channels"),
        Weights::F32(_) => Ok(()),
    };
    match op {
        Op::Gemm { x, w, b, y, m, k, n, act: _ } => {
            let (x, y, wc) = (buf(*x)?, buf(*y)?, konst(*w)?);
            ensure(x.len as usize == product(&[*m, *k])?, "input is not m × k")?;
            ensure(y.len as usize == product(&[*m, *n])?, "output is not m × n")?;
            ensure(wc.shape == [*k, *n], "weight is not k × n")?;
            int8_axis(wc, 1)?;
            bias(*b, *n as usize)?;
            disjoint(x, y)
        }
        Op::Conv { x, w, b, y, win, act: _ } => {
            let (x, y, wc) = (buf(*x)?, buf(*y)?, konst(*w)?);
            window(win, x, y)?;
            ensure(
                win.group > 0 && win.c_in % win.group == 0 && win.c_out % win.group == 0,
                "groups do not divide the channels",
            )?;
            ensure(
                wc.shape == [win.c_out, win.c_in / win.group, win.kh, win.kw],
                "weight shape differs from the window",
            )?;
            int8_axis(wc, 0)?;
            bias(*b, win.c_out as usize)?;
            disjoint(x, y)
        }
        Op::Pool { x, y, kind: _, win } => {
            ensure(win.c_in == win.c_out, "pooling changes the channels")?;
            window(win, buf(*x)?, buf(*y)?)?;
            disjoint(buf(*x)?, buf(*y)?)
        }
        Op::GlobalAvgPool { x, y, channels, spatial } => {
            ensure(*spatial > 0, "no values to average")?;
            ensure(buf(*x)?.len as usize == product(&[*channels, *spatial])?, "input is not channels × spatial")?;
            ensure(buf(*y)?.len == *channels, "output is not one value a channel")?;
            disjoint(buf(*x)?, buf(*y)?)
        }
        Op::Binary { kind: _, a, b, y, shape, a_strides, b_strides } => {
            let len = product(shape)?;
            ensure(buf(*y)?.len as usize == len, "output length differs from the shape")?;
            for (src, strides) in [(a, a_strides), (b, b_strides)] {
                ensure(strides.len() == shape.len(), "strides differ in rank from the shape")?;
                let have = match *src {
                    Src::Buf(i) => buf(i)?.len as usize,
                    Src::Const(i) => konst(i)?.len(),
                };
                let last = shape.iter().zip(strides.iter()).try_fold(0usize, |acc, (d, s)| {
                    (*d as usize).saturating_sub(1).checked_mul(*s as usize).and_then(|v| v.checked_add(acc))
                });
                ensure(len == 0 || last.is_some_and(|l| l < have), "operand smaller than its strides read")?;
            }
            Ok(())
        }
        Op::Unary { x, y, act: _ } => ensure(buf(*x)?.len == buf(*y)?.len, "input and output lengths differ"),
        Op::Softmax { x, y, outer, len, inner } => {
            let n = product(&[*outer, *len, *inner])?;
            ensure(buf(*x)?.len as usize == n && buf(*y)?.len as usize == n, "lengths differ from outer × len × inner")
        }
    }
}

fn window(win: &Window, x: Buffer, y: Buffer) -> Check {
    ensure(x.len as usize == product(&[win.batch, win.c_in, win.h, win.w])?, "input is not batch × c × h × w")?;
    ensure(y.len as usize == product(&[win.batch, win.c_out, win.oh, win.ow])?, "output is not batch × c × oh × ow")?;
    ensure(win.kh > 0 && win.kw > 0, "empty window")
}

/// Runs `model` with its arena in `arena` (at least [`Model::arena_bytes`]); the outputs are views
/// of the arena.
pub fn run_in<'r>(model: &Model, arena: &'r mut [f32], inputs: &[&[f32]]) -> Result<Vec<&'r [f32]>, Error> {
    run_in_with(model, arena, inputs, || {})
}

/// As [`run_in`], calling `between_ops` after each op: where a firmware that
/// does one thing at a time can tell its host it is still at work.
pub fn run_in_with<'r>(
    model: &Model,
    arena: &'r mut [f32],
    inputs: &[&[f32]],
    mut between_ops: impl FnMut(),
) -> Result<Vec<&'r [f32]>, Error> {
    let needed = model.arena as usize;
    if arena.len() < needed {
        return Err(Error::ArenaTooSmall { needed: needed.saturating_mul(4), given: arena.len().saturating_mul(4) });
    }
    if inputs.len() != model.inputs.len() {
        return Err(Error::InputCount { expected: model.inputs.len(), given: inputs.len() });
    }
    for (index, (io, values)) in model.inputs.iter().zip(inputs).enumerate() {
        let range = model.buffers[usize::from(io.buffer)].range();
        if values.len() != range.len() {
            return Err(Error::InputLength { index, expected: range.len(), given: values.len() });
        }
        arena[range].copy_from_slice(values);
    }
    for op in &model.ops {
        exec(model, op, arena);
        between_ops();
    }
    let arena: &'r [f32] = arena;
    let mut outputs = Vec::new();
    outputs
        .try_reserve_exact(model.outputs.len())
        .map_err(|_| Error::OutOfMemory { bytes: model.outputs.len().saturating_mul(16), what: "output list" })?;
    outputs.extend(model.outputs.iter().map(|io| &arena[model.buffers[usize::from(io.buffer)].range()]));
    Ok(outputs)
}

/// Runs `model` in an arena it allocates (an error, not a panic, when the allocator refuses it);
/// the outputs are copies.
pub fn run(model: &Model, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, Error> {
    let mut arena = try_vec(model.arena as usize, "activation arena")?;
    arena.resize(model.arena as usize, 0.0);
    let views = run_in(model, &mut arena, inputs)?;
    let mut outputs = try_vec(views.len(), "output list")?;
    for v in views {
        let mut out = try_vec(v.len(), "outputs")?;
        out.extend_from_slice(v);
        outputs.push(out);
    }
    Ok(outputs)
}

fn try_vec<T>(n: usize, what: &'static str) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory { bytes: n.saturating_mul(size_of::<T>()), what })?;
    Ok(v)
}

/// A weight tensor read in place: a raw value and the scale of its output channel.
trait Read {
    fn raw(&self, i: usize) -> f32;
    fn scale(&self, channel: usize) -> f32;
}

fn le_f32(bytes: &[u8], i: usize) -> f32 {
    let j = i * 4;
    f32::from_le_bytes([bytes[j], bytes[j + 1], bytes[j + 2], bytes[j + 3]])
}

struct F32s<'a>(&'a [u8]);
struct I8s<'a> {
    codes: &'a [u8],
    scales: &'a [u8],
}

impl Read for F32s<'_> {
    fn raw(&self, i: usize) -> f32 {
        le_f32(self.0, i)
    }
    fn scale(&self, _: usize) -> f32 {
        1.0
    }
}

impl Read for I8s<'_> {
    fn raw(&self, i: usize) -> f32 {
        f32::from(self.codes[i] as i8)
    }
    fn scale(&self, channel: usize) -> f32 {
        le_f32(self.scales, channel)
    }
}

impl Const<'_> {
    /// Element `i`, dequantized.
    fn at(&self, i: usize) -> f32 {
        match self.data {
            Weights::F32(b) => le_f32(b.0, i),
            Weights::I8 { codes, scales, axis } => {
                let axis = usize::from(axis);
                let inner = elements(&self.shape[axis + 1..]).unwrap_or(1);
                let channel = (i / inner) % self.shape[axis] as usize;
                f32::from(codes.0[i] as i8) * le_f32(scales.0, channel)
            }
        }
    }
}

/// Calls `f` with the weight reader of `c` (monomorphized per storage).
macro_rules! with_weights {
    ($c:expr, |$w:ident| $body:expr) => {
        match $c.data {
            Weights::F32(b) => {
                let $w = F32s(b.0);
                $body
            }
            Weights::I8 { codes, scales, .. } => {
                let $w = I8s { codes: codes.0, scales: scales.0 };
                $body
            }
        }
    };
}

fn apply(act: Act, v: f32) -> f32 {
    match act {
        Act::None => v,
        Act::Relu => v.max(0.0),
        // Not `clamp`, which panics on bounds a corrupted file may hold.
        Act::Clip { min, max } => v.max(min).min(max),
        Act::Sigmoid => 1.0 / (1.0 + libm::expf(-v)),
        Act::Tanh => libm::tanhf(v),
    }
}

/// The input and output of an op whose buffers `check` found disjoint.
fn split(arena: &mut [f32], x: Buffer, y: Buffer) -> (&[f32], &mut [f32]) {
    let (x, y) = (x.range(), y.range());
    if x.end <= y.start {
        let (lo, hi) = arena.split_at_mut(y.start);
        (&lo[x], &mut hi[..y.len()])
    } else {
        let (lo, hi) = arena.split_at_mut(x.start);
        (&hi[..x.len()], &mut lo[y])
    }
}

fn exec(model: &Model, op: &Op, arena: &mut [f32]) {
    let buf = |i: u16| model.buffers[usize::from(i)];
    let konst = |i: u16| &model.consts[usize::from(i)];
    match op {
        Op::Gemm { x, w, b, y, m, k, n, act } => {
            let (x, y) = split(arena, buf(*x), buf(*y));
            let b = b.map(konst);
            with_weights!(konst(*w), |w| gemm(x, &w, b, y, (*m as usize, *k as usize, *n as usize), *act))
        }
        Op::Conv { x, w, b, y, win, act } => {
            let (x, y) = split(arena, buf(*x), buf(*y));
            let b = b.map(konst);
            with_weights!(konst(*w), |w| conv(x, &w, b, y, win, *act))
        }
        Op::Pool { x, y, kind, win } => {
            let (x, y) = split(arena, buf(*x), buf(*y));
            pool(x, y, *kind, win);
        }
        Op::GlobalAvgPool { x, y, channels: _, spatial } => {
            let (x, y) = split(arena, buf(*x), buf(*y));
            for (out, row) in y.iter_mut().zip(x.chunks_exact(*spatial as usize)) {
                *out = row.iter().sum::<f32>() / *spatial as f32;
            }
        }
        Op::Binary { kind, a, b, y, shape, a_strides, b_strides } => {
            let y = buf(*y).offset as usize;
            let read = |arena: &[f32], src: Src, i: usize| match src {
                Src::Buf(j) => arena[buf(j).offset as usize + i],
                Src::Const(j) => konst(j).at(i),
            };
            // An odometer over the output's index: operand offsets follow their strides.
            let mut index = alloc::vec![0u32; shape.len()];
            let (mut ia, mut ib) = (0usize, 0usize);
            for o in 0..elements(shape).unwrap_or(0) {
                let (va, vb) = (read(arena, *a, ia), read(arena, *b, ib));
                arena[y + o] = match kind {
                    BinKind::Add => va + vb,
                    BinKind::Mul => va * vb,
                };
                for d in (0..shape.len()).rev() {
                    index[d] += 1;
                    ia += a_strides[d] as usize;
                    ib += b_strides[d] as usize;
                    if index[d] < shape[d] {
                        break;
                    }
                    index[d] = 0;
                    ia -= a_strides[d] as usize * shape[d] as usize;
                    ib -= b_strides[d] as usize * shape[d] as usize;
                }
            }
        }
        Op::Unary { x, y, act } => {
            let (x, y) = (buf(*x).offset as usize, buf(*y));
            for i in 0..y.len as usize {
                arena[y.offset as usize + i] = apply(*act, arena[x + i]);
            }
        }
        Op::Softmax { x, y, outer, len, inner } => {
            let (x, y) = (buf(*x).offset as usize, buf(*y).offset as usize);
            let (len, inner) = (*len as usize, *inner as usize);
            for o in 0..*outer as usize {
                for i in 0..inner {
                    let at = |j: usize| o * len * inner + j * inner + i;
                    let max = (0..len).map(|j| arena[x + at(j)]).fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for j in 0..len {
                        let e = libm::expf(arena[x + at(j)] - max);
                        arena[y + at(j)] = e;
                        sum += e;
                    }
                    for j in 0..len {
                        arena[y + at(j)] /= sum;
                    }
                }
            }
        }
    }
}

fn gemm(x: &[f32], w: &impl Read, b: Option<&Const>, y: &mut [f32], (m, k, n): (usize, usize, usize), act: Act) {
    for r in 0..m {
        let row = &mut y[r * n..(r + 1) * n];
        row.fill(0.0);
        // Row-major weights: the inner loop reads them contiguously.
        for (kk, xv) in x[r * k..(r + 1) * k].iter().enumerate() {
            for (j, out) in row.iter_mut().enumerate() {
                *out += xv * w.raw(kk * n + j);
            }
        }
        for (j, out) in row.iter_mut().enumerate() {
            let bias = b.map_or(0.0, |b| b.at(j));
            *out = apply(act, *out * w.scale(j) + bias);
        }
    }
}

fn conv(x: &[f32], w: &impl Read, b: Option<&Const>, y: &mut [f32], win: &Window, act: Act) {
    let u = |v: u32| v as usize;
    let (cg, mg) = (u(win.c_in / win.group), u(win.c_out / win.group));
    let (h, wd, oh, ow) = (u(win.h), u(win.w), u(win.oh), u(win.ow));
    for n in 0..u(win.batch) {
        for m in 0..u(win.c_out) {
            let g = m / mg;
            let bias = b.map_or(0.0, |b| b.at(m));
            let scale = w.scale(m);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for c in 0..cg {
                        let plane = &x[(n * u(win.c_in) + g * cg + c) * h * wd..][..h * wd];
                        for ky in 0..u(win.kh) {
                            let Some(iy) = tap(oy, ky, win.sh, win.dh, win.pads[0], h) else { continue };
                            for kx in 0..u(win.kw) {
                                let Some(ix) = tap(ox, kx, win.sw, win.dw, win.pads[1], wd) else { continue };
                                acc += plane[iy * wd + ix] * w.raw(((m * cg + c) * u(win.kh) + ky) * u(win.kw) + kx);
                            }
                        }
                    }
                    y[((n * u(win.c_out) + m) * oh + oy) * ow + ox] = apply(act, acc * scale + bias);
                }
            }
        }
    }
}

/// The input index an output position reads at kernel offset `k`, if inside the input
/// (checked arithmetic: a window's figures come from the model file).
fn tap(out: usize, k: usize, stride: u32, dilation: u32, pad: u32, size: usize) -> Option<usize> {
    out.checked_mul(stride as usize)?
        .checked_add(k.checked_mul(dilation as usize)?)?
        .checked_sub(pad as usize)
        .filter(|i| *i < size)
}

fn pool(x: &[f32], y: &mut [f32], kind: PoolKind, win: &Window) {
    let u = |v: u32| v as usize;
    let (h, wd, oh, ow) = (u(win.h), u(win.w), u(win.oh), u(win.ow));
    for plane in 0..u(win.batch) * u(win.c_in) {
        let xp = &x[plane * h * wd..][..h * wd];
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut max, mut sum, mut count, mut padded) = (f32::NEG_INFINITY, 0.0, 0usize, 0usize);
                for ky in 0..u(win.kh) {
                    let row =
                        tap(oy, ky, win.sh, win.dh, 0, h.saturating_add(u(win.pads[0]).saturating_add(u(win.pads[2]))));
                    for kx in 0..u(win.kw) {
                        let col = tap(
                            ox,
                            kx,
                            win.sw,
                            win.dw,
                            0,
                            wd.saturating_add(u(win.pads[1]).saturating_add(u(win.pads[3]))),
                        );
                        // Positions in the padding count for `count_include_pad`; those past it never do.
                        if row.is_some() && col.is_some() {
                            padded += 1;
                        }
                        let (Some(iy), Some(ix)) =
                            (tap(oy, ky, win.sh, win.dh, win.pads[0], h), tap(ox, kx, win.sw, win.dw, win.pads[1], wd))
                        else {
                            continue;
                        };
                        let v = xp[iy * wd + ix];
                        max = max.max(v);
                        sum += v;
                        count += 1;
                    }
                }
                y[(plane * oh + oy) * ow + ox] = match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg { count_pad: true } => sum / padded.max(1) as f32,
                    PoolKind::Avg { count_pad: false } => sum / count.max(1) as f32,
                };
            }
        }
    }
}
