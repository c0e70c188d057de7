import { useEffect, useRef, useState, type ReactNode } from "react";
import * as echarts from "echarts";

// The result of a request: what the page shows while it loads, when it fails, and when it is
// empty. API errors are shown, never swallowed.
export type Loadable<T> = { state: "loading" } | { state: "error"; message: string } | { state: "done"; data: T };

export function useApi<T>(load: () => Promise<T>, deps: unknown[]): Loadable<T> {
  const [value, setValue] = useState<Loadable<T>>({ state: "loading" });
  useEffect(() => {
    let live = true;
    setValue({ state: "loading" });
    load().then(
      (data) => live && setValue({ state: "done", data }),
      (e: unknown) => live && setValue({ state: "error", message: e instanceof Error ? e.message : String(e) }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return value;
}

export function ErrorBox({ message }: { message: string }) {
  return (
    <div className="error-box" role="alert">
      <strong>Clew could not answer.</strong> {message}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <div className="loading" role="status">
      <span className="spinner" /> Loading {what}…
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export function Show<T>({
  value,
  what,
  children,
}: {
  value: Loadable<T>;
  what: string;
  children: (data: T) => ReactNode;
}) {
  if (value.state === "loading") return <Loading what={what} />;
  if (value.state === "error") return <ErrorBox message={value.message} />;
  return <>{children(value.data)}</>;
}

// Copies text to the clipboard, and says so.
export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      className="copy"
      title={`Copy ${text.length > 60 ? text.slice(0, 60) + "…" : text}`}
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(() => {
          setDone(true);
          setTimeout(() => setDone(false), 1200);
        });
      }}
    >
      {done ? "Copied" : label}
    </button>
  );
}

export function currentTheme(): "light" | "dark" {
  return document.documentElement.dataset.theme === "dark" ? "dark" : "light";
}

// An Apache ECharts chart that follows the page's theme and size.
export function Chart({
  option,
  height = 260,
  onClick,
  testId,
}: {
  option: echarts.EChartsCoreOption;
  height?: number;
  onClick?: (params: echarts.ECElementEvent) => void;
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
    chart.current?.setOption({ backgroundColor: "transparent", ...option }, true);
  }, [option, theme]);
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
