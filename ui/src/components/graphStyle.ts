import type cytoscape from "cytoscape";

// What every Cytoscape graph in the UI shares: labelled nodes under the page's text colour,
// arrows between them.
export function labelledNode(dark: boolean, fontSize: number): cytoscape.Css.Node {
  return {
    label: "data(label)",
    "text-wrap": "wrap",
    "text-valign": "bottom",
    "text-margin-y": 4,
    "font-size": fontSize,
    "min-zoomed-font-size": 6,
    color: dark ? "#e3e7ee" : "#1d2430",
    "background-color": "data(colour)",
  };
}

export function arrowEdge(dark: boolean, width: number | string): cytoscape.Css.Edge {
  return {
    width,
    "curve-style": "bezier",
    "target-arrow-shape": "triangle",
    "line-color": dark ? "#4c566a" : "#adb5bd",
    "target-arrow-color": dark ? "#4c566a" : "#adb5bd",
  } as cytoscape.Css.Edge;
}
