// A stock npm y-websocket WebsocketProvider, as browsers use it, run by the test suite.
// Usage: node client.mjs <ws base url> <notebook id> <cookie> <origin> <tag> <edits>
// Types `<tag><i>` at the end of cell 0 `edits` times while others type, waits until the
// document holds `expect` markers (env EXPECT, a comma-separated list), prints the final source.
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";

const [base, notebookId, cookie, origin, tag, edits] = process.argv.slice(2);
const expect = (process.env.EXPECT || "").split(",").filter(Boolean);

class CookieWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { headers: { Cookie: cookie, Origin: origin } });
  }
}

const doc = new Y.Doc();
const provider = new WebsocketProvider(base, notebookId, doc, { WebSocketPolyfill: CookieWebSocket });
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail("timed out: " + JSON.stringify(doc.getArray("cells").toJSON()).slice(0, 300)), 30000);

provider.on("sync", async (synced) => {
  if (!synced) return;
  const source = doc.getArray("cells").get(0).get("source");
  for (let i = 0; i < Number(edits); i++) {
    source.insert(source.length, `${tag}${i};`);
    await new Promise((r) => setTimeout(r, 3));
  }
  const done = () => expect.every((m) => source.toString().includes(m));
  while (!done()) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  console.log(JSON.stringify({ source: source.toString(), cells: doc.getArray("cells").length }));
  provider.destroy();
  process.exit(0);
});
