//! A small ONNX graph builder over `tract_onnx::pb` (prost types).

use std::path::Path;

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Opset of every model we write: LayerNormalization is in 17, and both
/// tract 0.23 and ONNX Runtime run it.
pub const OPSET: i64 = 17;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// writing a model failed
    #[error("cannot write {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    I8,
    U8,
}

impl Elem {
    fn code(self) -> i32 {
        match self {
            Elem::F32 => DataType::Float as i32,
            Elem::I64 => DataType::Int64 as i32,
            Elem::I8 => DataType::Int8 as i32,
            Elem::U8 => DataType::Uint8 as i32,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::I8 | Elem::U8 => 1,
        }
    }
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

#[derive(Debug, Clone)]
pub enum Attr {
    Int(&'static str, i64),
    Float(&'static str, f32),
    Ints(&'static str, Vec<i64>),
    Str(&'static str, &'static str),
}

/// The domain of Microsoft's contrib operators (MatMulNBits).
pub const MS_DOMAIN: &str = "com.microsoft";

impl Attr {
    fn proto(&self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(name, i) => {
                a.name = (*name).into();
                a.i = *i;
                a.r#type = AttributeType::Int as i32;
            }
            Attr::Float(name, f) => {
                a.name = (*name).into();
                a.f = *f;
                a.r#type = AttributeType::Float as i32;
            }
            Attr::Ints(name, v) => {
                a.name = (*name).into();
                a.ints = v.clone();
                a.r#type = AttributeType::Ints as i32;
            }
            Attr::Str(name, v) => {
                a.name = (*name).into();
                a.s = v.as_bytes().to_vec();
                a.r#type = AttributeType::String as i32;
            }
        }
        a
    }
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Named(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem.code(),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds one graph; names of intermediate values are generated.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
    /// Operator domains used beyond the default one.
    domains: Vec<&'static str>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.into(), ..Default::default() }, counter: 0, domains: Vec::new() }
    }

    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, elem, dims));
        name.into()
    }

    pub fn output(&mut self, name: &str, elem: Elem, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    fn initializer(&mut self, name: &str, elem: Elem, dims: &[i64], raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: elem.code(),
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    pub fn f32s(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.initializer(name, Elem::F32, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn i64s(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        self.initializer(name, Elem::I64, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn i8s(&mut self, name: &str, dims: &[i64], data: &[i8]) -> String {
        self.initializer(name, Elem::I8, dims, data.iter().map(|v| *v as u8).collect())
    }

    /// An initializer whose bytes are raw little-endian values of `elem`.
    pub fn raw(&mut self, name: &str, elem: Elem, dims: &[i64], raw: Vec<u8>) -> String {
        self.initializer(name, elem, dims, raw)
    }

    /// An initializer stored in an external data file, `length` bytes at `offset`.
    pub fn external(
        &mut self,
        name: &str,
        elem: Elem,
        dims: &[i64],
        location: &str,
        offset: u64,
        length: u64,
    ) -> String {
        let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: elem.code(),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![
                entry("location", location.into()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ],
            ..Default::default()
        });
        name.into()
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.counter += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.counter);
        self.node_to(op, inputs, &out, attrs);
        out
    }

    /// Adds a node writing the value named `out` (a graph output, say).
    pub fn node_to(&mut self, op: &str, inputs: &[&str], out: &str, attrs: &[Attr]) {
        self.push(None, op, inputs, out, attrs);
    }

    /// Adds a node of another operator domain (`com.microsoft`).
    pub fn node_in(&mut self, domain: &'static str, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.counter += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.counter);
        self.push(Some(domain), op, inputs, &out, attrs);
        out
    }

    fn push(&mut self, domain: Option<&'static str>, op: &str, inputs: &[&str], out: &str, attrs: &[Attr]) {
        self.counter += 1;
        if let Some(d) = domain {
            if !self.domains.contains(&d) {
                self.domains.push(d);
            }
        }
        self.graph.node.push(NodeProto {
            name: format!("{op}_{}", self.counter),
            domain: domain.unwrap_or_default().into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![out.into()],
            attribute: attrs.iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    pub fn build(self) -> ModelProto {
        let mut opset_import = vec![OperatorSetIdProto { domain: String::new(), version: OPSET }];
        opset_import.extend(self.domains.iter().map(|d| OperatorSetIdProto { domain: (*d).into(), version: 1 }));
        ModelProto {
            ir_version: 8,
            producer_name: "edgehil".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import,
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// Writes a model to `path` (through a temporary name, so a reader never
/// sees half a file).
pub fn write_model(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    let tmp = path.with_extension("onnx.tmp");
    let err = |cause| OnnxError::Write { path: path.display().to_string(), cause };
    std::fs::write(&tmp, model.encode_to_vec()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
