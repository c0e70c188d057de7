import { StrictMode, Suspense, lazy, useState } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter, NavLink, Route, Routes } from "react-router-dom";

import "./theme.css";
import { Empty, Loading } from "./components/common";

// Each page is its own chunk: the trace view does not wait for the service map's graph library.
const SearchPage = lazy(() => import("./pages/Search").then((m) => ({ default: m.SearchPage })));
const TracePage = lazy(() => import("./pages/Trace").then((m) => ({ default: m.TracePage })));
const ServiceMapPage = lazy(() => import("./pages/ServiceMap").then((m) => ({ default: m.ServiceMapPage })));
const ServicesPage = lazy(() => import("./pages/Service").then((m) => ({ default: m.ServicesPage })));
const ServicePage = lazy(() => import("./pages/Service").then((m) => ({ default: m.ServicePage })));
const CoveragePage = lazy(() => import("./pages/Adoption").then((m) => ({ default: m.CoveragePage })));
const PlanPage = lazy(() => import("./pages/Adoption").then((m) => ({ default: m.PlanPage })));
const DirectoryPage = lazy(() => import("./pages/Adoption").then((m) => ({ default: m.DirectoryPage })));
const OperationsPage = lazy(() => import("./pages/Adoption").then((m) => ({ default: m.OperationsPage })));
const FlowsPage = lazy(() => import("./pages/Flows").then((m) => ({ default: m.FlowsPage })));
const CriticalPathPage = lazy(() => import("./pages/Performance").then((m) => ({ default: m.CriticalPathPage })));
const CorrelationsPage = lazy(() => import("./pages/Performance").then((m) => ({ default: m.CorrelationsPage })));
const TrafficPage = lazy(() => import("./pages/Performance").then((m) => ({ default: m.TrafficPage })));
const MetricsPage = lazy(() => import("./pages/Metrics").then((m) => ({ default: m.MetricsPage })));
const ComparePage = lazy(() => import("./pages/Compare").then((m) => ({ default: m.ComparePage })));

// The navigation. Analyses that later work adds (coverage, rollout plan, critical user
// operations, traffic estimation, correlations) get their entry here and a route below.
const NAVIGATION: { to: string; label: string }[] = [
  { to: "/search", label: "Search" },
  { to: "/traceql-metrics", label: "Metrics" },
  { to: "/map", label: "Service map" },
  { to: "/services", label: "Services" },
  { to: "/flows", label: "Flows" },
  { to: "/compare", label: "Compare" },
  { to: "/critical-path", label: "Critical path" },
  { to: "/correlations", label: "Correlations" },
  { to: "/traffic", label: "Traffic" },
  { to: "/coverage", label: "Coverage" },
  { to: "/operations", label: "Critical operations" },
  { to: "/plan", label: "Rollout plan" },
  { to: "/directory", label: "Directory" },
];

function ThemeToggle() {
  const [theme, setTheme] = useState(document.documentElement.dataset.theme ?? "light");
  const flip = () => {
    const next = theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("clew-theme", next);
    setTheme(next);
  };
  return (
    <button className="theme-toggle" onClick={flip} title="Switch between light and dark" data-testid="theme-toggle">
      {theme === "dark" ? "☀ Light" : "☾ Dark"}
    </button>
  );
}

function App() {
  return (
    <BrowserRouter>
      <header className="top">
        <NavLink to="/search" className="brand">
          clew
        </NavLink>
        <nav>
          {NAVIGATION.map((item) => (
            <NavLink key={item.to} to={item.to}>
              {item.label}
            </NavLink>
          ))}
        </nav>
        <span className="spacer" />
        <ThemeToggle />
      </header>
      <main>
        <Suspense fallback={<Loading what="the page" />}>
        <Routes>
          <Route path="/" element={<SearchPage />} />
          <Route path="/search" element={<SearchPage />} />
          <Route path="/trace/:traceId" element={<TracePage />} />
          <Route path="/map" element={<ServiceMapPage />} />
          <Route path="/services" element={<ServicesPage />} />
          <Route path="/services/:service" element={<ServicePage />} />
          <Route path="/traceql-metrics" element={<MetricsPage />} />
          <Route path="/compare" element={<ComparePage />} />
          <Route path="/flows" element={<FlowsPage />} />
          <Route path="/critical-path" element={<CriticalPathPage />} />
          <Route path="/correlations" element={<CorrelationsPage />} />
          <Route path="/traffic" element={<TrafficPage />} />
          <Route path="/coverage" element={<CoveragePage />} />
          <Route path="/plan" element={<PlanPage />} />
          <Route path="/operations" element={<OperationsPage />} />
          <Route path="/directory" element={<DirectoryPage />} />
          <Route
            path="*"
            element={
              <Empty>
                No page here. Start from <a href="/search">Search</a>.
              </Empty>
            }
          />
        </Routes>
        </Suspense>
      </main>
    </BrowserRouter>
  );
}

const saved = localStorage.getItem("clew-theme");
document.documentElement.dataset.theme =
  saved ?? (window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light");

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
