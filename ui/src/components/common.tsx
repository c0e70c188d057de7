import { useEffect, useState, type ReactNode } from "react";

import { api } from "../api";

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

// A report's warnings, a panel each.
export function WarningPanels({ warnings }: { warnings: string[] }) {
  return (
    <>
      {warnings.map((w) => (
        <div key={w} className="panel warning">
          {w}
        </div>
      ))}
    </>
  );
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


// A labelled drop-down: `options` as [value, label] pairs, with an optional first entry for
// "no choice" (value "").
export function Picker({
  label,
  value,
  onChange,
  options,
  none,
  testId,
  disabled,
  flex,
}: {
  label: string;
  value: string;
  onChange: (value: string) => void;
  options: [string, string][];
  none?: string;
  testId?: string;
  disabled?: boolean;
  flex?: number;
}) {
  return (
    <label className="field" style={flex ? { flex } : undefined}>
      {label}
      <select value={value} disabled={disabled} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
        {none !== undefined && <option value="">{none}</option>}
        {options.map(([v, text]) => (
          <option key={v} value={v}>
            {text}
          </option>
        ))}
      </select>
    </label>
  );
}

// The entry operations (SERVER/CONSUMER roots) of the last `lookback`, busiest first, as picker
// options: the value is `service\u0000operation`.
export function useEntries(lookback: string) {
  const entries = useApi(() => api.entryOperations(new URLSearchParams({ lookback })), [lookback]);
  const options: [string, string][] =
    entries.state === "done"
      ? entries.data
          .filter((e) => e.kind === "server" || e.kind === "consumer")
          .map((e) => [`${e.service}\u0000${e.operation}`, `${e.service} ${e.operation} (${e.requests.toLocaleString()})`])
      : [];
  return { entries, options };
}
