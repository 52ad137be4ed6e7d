// The official mini-program SDK (web-track-mini 0.0.2) in Node, with a wx.request stand-in
// that does what WeChat does: an HTTPS request with Content-Type application/json. The SDK
// always writes to https://{project}.{host}: the stand-in resolves that name to the
// emulator's address and trusts its certificate, as a phone would trust the real service.
// Input (stdin, JSON): port, ca (PEM path), project, logstore. Prints the answer's status.
const fs = require("fs");
const https = require("https");

const input = JSON.parse(fs.readFileSync(0, "utf8"));
globalThis.wx = {
  request({ url, method, data }) {
    const body = typeof data === "string" ? data : JSON.stringify(data);
    const req = https.request(url, {
      method,
      ca: fs.readFileSync(input.ca),
      headers: { "Content-Type": "application/json" },
      lookup: (hostname, options, callback) =>
        options.all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4),
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => process.stdout.write(String(res.statusCode)));
    });
    req.on("error", (error) => {
      process.stderr.write(String(error));
      process.exitCode = 1;
    });
    req.end(body);
  },
};
const Tracker = require("@aliyun-sls/web-track-mini").default;
const tracker = new Tracker({
  host: `sls.localhost:${input.port}`,
  project: input.project,
  logstore: input.logstore,
  topic: "mini",
  source: "wechat",
  tags: { app: "mini" },
  time: 0,
  count: 2,
});
tracker.sendBatchLogsImmediate([{ page: "/index", n: 1 }, { page: "/cart", ok: false }]);
