"""`@axisor/realtime` as an application's TypeScript sees it: its three entries (`.`, `./react`,
`./worker`) type-check under each `moduleResolution` an application may use — `bundler` and `node16`
read `exports`, the older `node` (node10) reads `typesVersions`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.js.test_realtime_package import PACKAGE, built_package

APP = """\
import { EventsClient, type ConnectionStatus } from "@axisor/realtime";
import { useWebSocket, type UseWebSocketResult } from "@axisor/realtime/react";
import type { WorkerRequest } from "@axisor/realtime/worker";

const client = new EventsClient("ws://127.0.0.1:8000/ws", () => "a-jwt");
const status: ConnectionStatus = client.getStatus();
const request: WorkerRequest = { msgType: "connect", session: "s", token: "t" };
const hook: (url: string, token: string) => UseWebSocketResult = useWebSocket;
// @ts-expect-error the worker's requests are typed
const wrong: WorkerRequest = { msgType: "nope" };
export { status, request, hook, wrong };
"""


@pytest.mark.parametrize(
    ("resolution", "module", "package_type"),
    [("node10", "ES2022", None), ("bundler", "ES2022", None), ("node16", "node16", "module")],
)
def test_entries_resolve_under_each_module_resolution(tmp_path: Path, resolution, module, package_type):
    built_package()
    tsc = PACKAGE / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "clients/js is not installed: run scripts/bootstrap test (npm ci)"
    modules = tmp_path / "node_modules"
    (modules / "@axisor").mkdir(parents=True)
    (modules / "@axisor" / "realtime").symlink_to(PACKAGE)  # as `npm install /path/to/clients/js` does
    package = {"name": "app", "private": True, **({"type": package_type} if package_type else {})}
    (tmp_path / "package.json").write_text(json.dumps(package))
    (tmp_path / "app.ts").write_text(APP)
    config = {
        "compilerOptions": {
            "target": "ES2022",
            "module": module,
            "moduleResolution": resolution,
            "lib": ["ES2022", "DOM"],
            "strict": True,
            "noEmit": True,
            "skipLibCheck": True,
            # `react` resolves from the package's real path (its dev install of React's types).
            "types": [],
        },
        "files": ["app.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [str(tsc), "-p", "tsconfig.json"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
