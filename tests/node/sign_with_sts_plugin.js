// Signs a batch of logs as the official browser SDK does with its STS plugin, and prints
// the request it would send: {"url", "headers", "body"} (tests/test_signed.py sends it).
// Input (stdin, JSON): accessKeyId, accessKeySecret, securityToken?, host, project,
// logstore, topic?, source?, tags?, logs.
const WebTracker = require("@aliyun-sls/web-track-base");
const createStsPlugin = require("@aliyun-sls/web-sts-plugin");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const plugin = createStsPlugin({
  accessKeyId: input.accessKeyId,
  accessKeySecret: input.accessKeySecret,
  securityToken: input.securityToken,
  refreshSTSToken: async () => {},
});
const tracker = new WebTracker({
  host: input.host,
  project: input.project,
  logstore: input.logstore,
  topic: input.topic,
  source: input.source,
  tags: input.tags,
  time: 0,
  count: 1,
  sendPayload: async (url, payload) => {
    // As web-track-browser's sendPutlog: the signed form drops "/track".
    const signedUrl = url.slice(0, -6);
    const { data, header } = await plugin.process(signedUrl, payload);
    process.stdout.write(JSON.stringify({ url: signedUrl, headers: header, body: data }));
  },
});
tracker.overwriteTransString(plugin);
tracker.sendBatchLogsImmediate(input.logs);
