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
  testId,
}: {
  option: echarts.EChartsCoreOption;
  height?: number;
  onClick?: (params: echarts.ECElementEvent) => void;
  // With a `brush` in the option (debounced): called with the data indexes of the first series
  // inside the brushed range once the brush stops moving; the brush is the chart's cursor.
  onBrush?: (dataIndexes: number[]) => void;
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
    if (onBrush) {
      chart.current?.dispatchAction({ type: "takeGlobalCursor", key: "brush", brushOption: { brushType: "lineX", brushMode: "single" } });
    }
  }, [option, theme, onBrush]);
  useEffect(() => {
    const instance = chart.current;
    if (!instance || !onBrush) return;
    const selected = (params: unknown) => {
      const batch = (params as { batch?: { selected?: { dataIndex: number[] }[] }[] }).batch;
      const indexes = batch?.[0]?.selected?.[0]?.dataIndex ?? [];
      // Redrawing clears the brush and reports an empty selection: not a choice.
      if (indexes.length) onBrush(indexes);
    };
    instance.on("brushselected", selected);
    return () => {
      instance.off("brushselected", selected);
    };
  }, [onBrush, theme]);
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
