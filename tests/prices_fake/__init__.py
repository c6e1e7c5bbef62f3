"""One fake for the three price APIs `harness prices refresh` reads, on 127.0.0.1.

Each route answers in the shape its API documents (no live answer could be fetched here):

- `GET /api/retail/prices` (Azure Retail Prices API, public): `{"Items": [...], "NextPageLink",
  "Count", ...}` with `retailPrice`, `unitOfMeasure`, `meterName`, `productName`, `skuName`,
  `armRegionName`, `effectiveStartDate`; two pages, token meters per `1K` and per `1M`, hosting
  per `1 Hour`, and meters a reader must not take (cached, batch, Data Zone, Developer training).
- `GET /v0/models` (Nebius Token Factory, bearer key): `{"data": [{"id", "fine_tune":
  {"training_price_per_million_tokens"}, "flavours": [...]}]}`.
- `GET /v1/hardware` (Together, bearer key): `{"data": [{"id", "pricing": {"cents_per_minute"}}]}`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KEY = "test-key-not-real"  # what the fake accepts; a test checks it is written nowhere


def _meter(name: str, price: float, unit: str, sku: str = "", since: str = "2025-05-01") -> dict:
    return {
        "currencyCode": "USD",
        "retailPrice": price,
        "unitPrice": price,
        "unitOfMeasure": unit,
        "meterName": name,
        "productName": "Azure OpenAI",
        "skuName": sku or name,
        "serviceName": "Foundry Models",
        "armRegionName": "eastus2",
        "location": "US East 2",
        "effectiveStartDate": f"{since}T00:00:00Z",
        "type": "Consumption",
    }


PAGE_ONE = [
    _meter("gpt 4.1 nano FT Trng Glbl 1M Tokens", 0.0015, "1K"),  # per 1K: $1.50 per 1M
    _meter("gpt 4.1 nano FT Trng Regional 1M Tokens", 0.00165, "1K"),  # dearer: the worst case
    _meter("gpt 4.1 nano FT Trng Dev 1M Tokens", 0.00075, "1K"),  # Developer tier: not taken
    _meter("gpt-4.1-nano ft inp Glbl", 0.1, "1M"),  # already per 1M
    _meter("gpt-4.1-nano ft outp Glbl", 0.0004, "1K"),
    _meter("gpt-4.1-nano ft cached inp Glbl", 0.000025, "1K"),  # a cached rate: not taken
]
PAGE_TWO = [
    _meter("GPT41 nano FT Hosting", 1.7, "1 Hour", since="2025-06-01"),
    _meter("gpt 4.1 mini FT Trng Glbl", 0.005, "1K"),  # the only training meter: taken
    _meter("gpt 4.1 mini batch inp Glbl", 0.0002, "1K"),  # batch: not taken
    _meter("gpt 4.1 mini Inp Glbl", 0.00042, "1K"),  # the base model's: fine-tuned at its rate
    _meter("gpt 4.1 mini Inp DZone", 0.00044, "1K"),  # Data Zone: not the Global rate
]
NEBIUS_MODELS = [
    {
        "id": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "fine_tune": {"training_price_per_million_tokens": 0.4},
        "flavours": [
            {
                "name": "base",
                "pricing": {
                    "input_price_per_million_tokens": 0.02,
                    "output_price_per_million_tokens": 0.06,
                },
            },
            {
                "name": "fast",
                "pricing": {
                    "input_price_per_million_tokens": 0.03,
                    "output_price_per_million_tokens": 0.09,
                },
            },
        ],
    },
    {"id": "some/inference-only", "fine_tune": None, "flavours": []},
]
HARDWARE = [
    {"id": "1x_nvidia_h100_80gb_sxm", "object": "hardware", "pricing": {"cents_per_minute": 5.5}},
    {"id": "2x_nvidia_h100_80gb_sxm", "object": "hardware", "pricing": {"cents_per_minute": 11}},
]


class PriceServer:
    """Start with `with PriceServer() as server:`; `server.url` is its root; stopped on exit."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []  # path, Authorization header
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                parts = urlsplit(self.path)
                outer.requests.append((parts.path, auth))
                status, body = outer.answer(parts.path, parts.query, auth)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, query: str, auth: str | None) -> tuple[int, Any]:
        if path == "/api/retail/prices":
            if "page=2" in query:
                return 200, {"Items": PAGE_TWO, "NextPageLink": None, "Count": len(PAGE_TWO)}
            nxt = f"{self.url}/api/retail/prices?page=2"
            return 200, {"Items": PAGE_ONE, "NextPageLink": nxt, "Count": len(PAGE_ONE)}
        if auth != f"Bearer {KEY}":
            return 401, {"error": {"message": "bad key"}}
        if path == "/v0/models":
            return 200, {"object": "list", "data": NEBIUS_MODELS}
        if path == "/v1/hardware":
            return 200, {"object": "list", "data": HARDWARE}
        return 404, {"error": {"message": f"no route {path}"}}

    def __enter__(self) -> PriceServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
