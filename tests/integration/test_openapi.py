"""The API document is valid OpenAPI YAML, and every path it lists is served."""
import yaml


def test_every_documented_path_is_served(clew):
    response = clew.get("/api/v1/openapi.yaml")
    assert response.status_code == 200
    document = yaml.safe_load(response.text)
    assert document["openapi"].startswith("3.")
    samples = {"{service}": "checkout", "{traceId}": "0af7651916cd43dd8448eb211c80319c", "{key}": "http.route", "{name}": "Checkout"}
    assert len(document["paths"]) >= 9
    for path, operations in document["paths"].items():
        for name, value in samples.items():
            path = path.replace(name, value)
        assert "{" not in path, path
        if "get" in operations:
            if path.endswith("/sql"):
                answer = clew.get(path, q="SELECT 1")
            elif path.endswith("/flow") or path.endswith("/critical-path"):
                answer = clew.get(path, service="checkout", operation="POST /checkout")
            elif path.endswith("/correlations"):
                answer = clew.get(path, service="checkout", errors="true")
            else:
                # Required parameters take the document's own example.
                required = {p["name"]: p["example"] for p in operations["get"].get("parameters", [])
                            if p.get("in") == "query" and p.get("required")}
                answer = clew.get(path, **required)
            # 404 for a missing trace is an answer; "no such endpoint" is not.
            assert "no such endpoint" not in answer.text, path
            assert answer.status_code in (200, 404), (path, answer.status_code, answer.text[:200])
