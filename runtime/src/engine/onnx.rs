//! What we check in an ONNX file before any engine sees it.
//!
//! tract panics on some malformed graphs (an output that names no tensor)
//! and on out-of-range `Gather` indices, and opening a FIFO blocks forever.
//! tract, on the board and on the host, goes through [`read`], so a bad file
//! is a clear load error and a bad id a clear input error; ONNX Runtime
//! checks graphs and indices itself and gets the file check alone.

use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::path::Path;
use std::string::{String, ToString};

use tract_onnx::pb::{GraphProto, ModelProto};
use tract_onnx::prelude::Framework;

use super::EngineError;

/// Rows of the table an integer input indexes (`Gather(table, input)`):
/// its values must lie in `0..rows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBound {
    pub table: String,
    pub rows: u64,
}

/// Per integer input name, the bound its values must respect.
pub type IndexBounds = BTreeMap<String, IndexBound>;

/// Reads and checks the model file: a regular file (and regular external
/// data files), a graph whose every output and node input names a tensor.
pub fn read(path: &Path) -> Result<ModelProto, EngineError> {
    let load_err = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
    regular_file(path).map_err(load_err)?;
    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(|e| load_err(format!("{e:#}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    validate(proto.graph.as_ref().ok_or_else(|| load_err("the file holds no graph".to_string()))?, dir)
        .map_err(load_err)?;
    Ok(proto)
}

/// Errors unless `path` is a regular file (following links): a FIFO or a
/// device would block the open, a folder would fail obscurely.
pub fn regular_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
    Err(format!("{} is {kind}; a model must be a regular file", path.display()))
}

/// Checks the graph's names resolve, and that external data files are
/// regular files inside `dir`.
pub fn validate(graph: &GraphProto, dir: &Path) -> Result<(), String> {
    let mut known: BTreeSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    known.extend(graph.sparse_initializer.iter().filter_map(|t| t.values.as_ref()).map(|t| t.name.as_str()));
    known.extend(graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)));
    for node in &graph.node {
        // An empty name is an omitted optional input.
        if let Some(missing) = node.input.iter().find(|i| !i.is_empty() && !known.contains(i.as_str())) {
            // Inside a subgraph a name may come from the enclosing graph: only the top level is checked.
            return Err(format!(
                "node `{}` ({}) reads `{missing}`, which no node, input or initializer produces",
                node.name, node.op_type
            ));
        }
    }
    if let Some(missing) = graph.output.iter().find(|o| !known.contains(o.name.as_str())) {
        return Err(format!("graph output `{}` names no tensor of the graph", missing.name));
    }
    for t in &graph.initializer {
        if let Some(location) = t.external_data.iter().find(|e| e.key == "location") {
            let file = Path::new(&location.value);
            if file.is_absolute() || file.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!(
                    "initializer `{}` keeps its data at `{}`, outside the model's folder",
                    t.name, location.value
                ));
            }
            regular_file(&dir.join(file)).map_err(|e| format!("initializer `{}`: {e}", t.name))?;
        }
    }
    Ok(())
}

/// Integer graph inputs used directly as `Gather` indices into a table of
/// known rows (an initializer, or one dequantized or cast on the way).
pub fn index_bounds(graph: &GraphProto) -> IndexBounds {
    let rows: BTreeMap<&str, u64> = graph
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.as_str(), u64::try_from(*t.dims.first()?).ok()?)))
        .collect();
    // A table passed through an elementwise op keeps its rows.
    let table_rows = |name: &str| -> Option<(String, u64)> {
        if let Some(r) = rows.get(name) {
            return Some((name.to_string(), *r));
        }
        let producer = graph.node.iter().find(|n| n.output.iter().any(|o| o == name))?;
        let through = matches!(producer.op_type.as_str(), "DequantizeLinear" | "Cast" | "Identity");
        let source = producer.input.first().filter(|_| through)?;
        rows.get(source.as_str()).map(|r| (source.clone(), *r))
    };
    let inputs: BTreeSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let mut bounds = IndexBounds::new();
    for node in graph.node.iter().filter(|n| n.op_type == "Gather") {
        let axis = node.attribute.iter().find(|a| a.name == "axis").map_or(0, |a| a.i);
        let (Some(table), Some(ids)) = (node.input.first(), node.input.get(1)) else { continue };
        if axis != 0 || !inputs.contains(ids.as_str()) {
            continue;
        }
        if let Some((table, rows)) = table_rows(table) {
            let tighter = bounds.get(ids).is_none_or(|b| rows < b.rows);
            if tighter {
                bounds.insert(ids.clone(), IndexBound { table, rows });
            }
        }
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{NodeProto, TensorProto, ValueInfoProto};

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto { name: name.to_string(), ..Default::default() }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.to_string(),
            name: format!("{op}_{output}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: std::vec![output.to_string()],
            ..Default::default()
        }
    }

    fn embedding_graph(output: &str) -> GraphProto {
        GraphProto {
            input: std::vec![value("input_ids")],
            initializer: std::vec![TensorProto { name: "wte".into(), dims: std::vec![50, 4], ..Default::default() }],
            node: std::vec![node("Gather", &["wte", "input_ids"], "x")],
            output: std::vec![value(output)],
            ..Default::default()
        }
    }

    #[test]
    fn an_output_that_names_no_tensor_is_refused_with_its_name() {
        let here = Path::new(".");
        assert_eq!(validate(&embedding_graph("x"), here), Ok(()));
        let err = validate(&embedding_graph("nowhere"), here).unwrap_err();
        assert_eq!(err, "graph output `nowhere` names no tensor of the graph");
        let mut g = embedding_graph("x");
        g.node.push(node("Relu", &["ghost"], "y"));
        assert!(validate(&g, here).unwrap_err().contains("reads `ghost`"), "node inputs are checked too");
    }

    #[test]
    fn gather_indices_are_bounded_by_their_table_rows() {
        let bounds = index_bounds(&embedding_graph("x"));
        assert_eq!(bounds.get("input_ids"), Some(&IndexBound { table: "wte".into(), rows: 50 }));
        assert_eq!(bounds.len(), 1);
    }
}
