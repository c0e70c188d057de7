// Numbers as people read them.

export function duration(nanos: number): string {
  if (!Number.isFinite(nanos)) return "–";
  const abs = Math.abs(nanos);
  if (abs < 1_000) return `${nanos.toFixed(0)}ns`;
  if (abs < 1_000_000) return `${(nanos / 1_000).toFixed(abs < 10_000 ? 2 : 1)}µs`;
  if (abs < 1_000_000_000) return `${(nanos / 1_000_000).toFixed(abs < 10_000_000 ? 2 : 1)}ms`;
  if (abs < 60_000_000_000) return `${(nanos / 1_000_000_000).toFixed(2)}s`;
  return `${(nanos / 60_000_000_000).toFixed(1)}min`;
}

export function timestamp(unixNanos: number | string): string {
  const ms = Number(BigInt(unixNanos) / 1_000_000n);
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false }) + `.${String(ms % 1000).padStart(3, "0")}`;
}

export function ago(unixNanos: number): string {
  const seconds = (Date.now() - unixNanos / 1e6) / 1000;
  if (seconds < 60) return `${Math.max(0, Math.round(seconds))}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

export function percent(part: number, whole: number): string {
  if (!whole) return "0%";
  const p = (100 * part) / whole;
  return p > 0 && p < 0.1 ? "<0.1%" : `${p.toFixed(p < 10 ? 1 : 0)}%`;
}

export function rate(calls: number, windowNanos: number): string {
  const perSecond = calls / (windowNanos / 1e9);
  if (perSecond >= 10) return `${perSecond.toFixed(0)}/s`;
  if (perSecond >= 0.1) return `${perSecond.toFixed(2)}/s`;
  return `${(perSecond * 60).toFixed(2)}/min`;
}

// A stable colour per service, readable on light and dark backgrounds.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7", "#9c755f",
  "#8cd17d", "#a0cbe8", "#ffbe7d", "#d4a6c8", "#86bcb6", "#f1ce63", "#bab0ac", "#499894",
  "#d37295", "#79706e", "#b6992d", "#e15759",
];

export function serviceColour(service: string): string {
  let hash = 2166136261;
  for (let i = 0; i < service.length; i++) {
    hash ^= service.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return PALETTE[(hash >>> 0) % PALETTE.length];
}

// Lookback presets for every time picker.
export const LOOKBACKS: [string, string][] = [
  ["5m", "Last 5 minutes"],
  ["15m", "Last 15 minutes"],
  ["30m", "Last 30 minutes"],
  ["1h", "Last hour"],
  ["6h", "Last 6 hours"],
  ["24h", "Last 24 hours"],
  ["168h", "Last 7 days"],
];

export function lookbackNanos(lookback: string): number {
  const m = /^(\d+)(m|h)$/.exec(lookback);
  if (!m) return 3600e9;
  return Number(m[1]) * (m[2] === "m" ? 60e9 : 3600e9);
}
