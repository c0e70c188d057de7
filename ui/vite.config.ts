import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The pages are served by the clew binary on the query port; `npm run dev` proxies the API to
// a running `clew serve`.
export default defineConfig({
  plugins: [react()],
  build: { chunkSizeWarningLimit: 2500, sourcemap: false },
  server: { proxy: { "/api": "http://127.0.0.1:16686" } },
});
