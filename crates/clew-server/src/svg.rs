//! Graphs as SVG pictures: the DOT that the service map and the flows already write, laid out
//! and drawn by the `layout-rs` crate (no Graphviz install needed).

use layout::backends::svg::SVGWriter;
use layout::gv::{DotParser, GraphBuilder};

/// The picture of a DOT graph, or why it could not be drawn.
pub(crate) fn dot_to_svg(dot: &str) -> Result<String, String> {
    let mut parser = DotParser::new(dot);
    let graph = parser.process()?;
    let mut builder = GraphBuilder::new();
    builder.visit_graph(&graph);
    let mut visual = builder.get();
    let mut writer = SVGWriter::new();
    visual.do_it(false, false, false, &mut writer);
    Ok(writer.finalize())
}
