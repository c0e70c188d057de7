import { useEffect, useRef, useState } from "react";
import * as echarts from "echarts/core";
import { BarChart, CustomChart, HeatmapChart, LineChart, ScatterChart } from "echarts/charts";
import {
  BrushComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  TitleComponent,
  TooltipComponent,
  VisualMapComponent,
} from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

// Only the parts of ECharts the pages draw with, so the bundle stays small.
echarts.use([
  BrushComponent,
  BarChart,
  CustomChart,
  HeatmapChart,
  LineChart,
  ScatterChart,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  TitleComponent,
  TooltipComponent,
  VisualMapComponent,
  CanvasRenderer,
]);

import { currentTheme } from "./common";

// An Apache ECharts chart that follows the page's theme and size.
export function Chart({
  option,
  height = 260,
  onClick,
  onBrush,
  onBrushArea,
  testId,
}: {
  option: echarts.EChartsCoreOption;
  height?: number;
  onClick?: (params: echarts.ECElementEvent) => void;
  // With a `brush` in the option (debounced): called with the data indexes of the first series
  // inside the brushed range once the brush stops moving; the brush is the chart's cursor.
  onBrush?: (dataIndexes: number[]) => void;
  // A rectangle brush instead (`brush` with `xAxisIndex` and `yAxisIndex` in the option): called with the brushed
  // area's [[x from, x to], [y from, y to]] in axis values (category indexes on category axes).
  onBrushArea?: (coordRange: number[][]) => void;
  testId?: string;
}) {
  const element = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  const [theme, setTheme] = useState(currentTheme());
  useEffect(() => {
    const observer = new MutationObserver(() => setTheme(currentTheme()));
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    return () => observer.disconnect();
  }, []);
  useEffect(() => {
    if (!element.current) return;
    const instance = echarts.init(element.current, theme === "dark" ? "dark" : undefined, { renderer: "canvas" });
    chart.current = instance;
    const resize = new ResizeObserver(() => instance.resize());
    resize.observe(element.current);
    return () => {
      resize.disconnect();
      instance.dispose();
      chart.current = null;
    };
  }, [theme]);
  useEffect(() => {
    // No entry animation: a dashboard redrawn every refresh should not sweep in each time.
    chart.current?.setOption({ backgroundColor: "transparent", animation: false, ...option }, true);
    if (onBrush || onBrushArea) {
      const brushType = onBrushArea ? "rect" : "lineX";
      chart.current?.dispatchAction({ type: "takeGlobalCursor", key: "brush", brushOption: { brushType, brushMode: "single" } });
    }
  }, [option, theme, onBrush, onBrushArea]);
  useEffect(() => {
    const instance = chart.current;
    if (!instance || !(onBrush || onBrushArea)) return;
    const selected = (params: unknown) => {
      const batch = (params as { batch?: { selected?: { dataIndex: number[] }[]; areas?: { coordRange?: number[][] }[] }[] })
        .batch;
      if (onBrushArea) {
        const range = batch?.[0]?.areas?.[0]?.coordRange;
        // Redrawing clears the brush and reports no area: not a choice.
        if (range && range.length === 2) onBrushArea(range);
        return;
      }
      const indexes = batch?.[0]?.selected?.[0]?.dataIndex ?? [];
      if (indexes.length && onBrush) onBrush(indexes);
    };
    instance.on("brushselected", selected);
    return () => {
      instance.off("brushselected", selected);
    };
  }, [onBrush, onBrushArea, theme]);
  useEffect(() => {
    const instance = chart.current;
    if (!instance || !onClick) return;
    instance.on("click", onClick);
    return () => {
      instance.off("click", onClick);
    };
  }, [onClick, theme]);
  return <div ref={element} className="chart" style={{ height }} data-testid={testId} />;
}

export default Chart;
