import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter, NavLink, Route, Routes } from "react-router-dom";

import "./theme.css";
import { SearchPage } from "./pages/Search";
import { TracePage } from "./pages/Trace";
import { ServiceMapPage } from "./pages/ServiceMap";
import { ServicePage, ServicesPage } from "./pages/Service";
import { ComparePage } from "./pages/Compare";
import { Empty } from "./components/common";

// The navigation. Analyses that later work adds (coverage, rollout plan, critical user
// operations, traffic estimation, correlations) get their entry here and a route below.
const NAVIGATION: { to: string; label: string }[] = [
  { to: "/search", label: "Search" },
  { to: "/map", label: "Service map" },
  { to: "/services", label: "Services" },
  { to: "/compare", label: "Compare" },
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
        <Routes>
          <Route path="/" element={<SearchPage />} />
          <Route path="/search" element={<SearchPage />} />
          <Route path="/trace/:traceId" element={<TracePage />} />
          <Route path="/map" element={<ServiceMapPage />} />
          <Route path="/services" element={<ServicesPage />} />
          <Route path="/services/:service" element={<ServicePage />} />
          <Route path="/compare" element={<ComparePage />} />
          <Route
            path="*"
            element={
              <Empty>
                No page here. Start from <a href="/search">Search</a>.
              </Empty>
            }
          />
        </Routes>
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
