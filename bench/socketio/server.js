// One socket.io 4.8 server process with @socket.io/redis-adapter 8.3 (classic pub/sub).
// Robots connect with auth {robot: ID} and join the room ID. A driver connects with
// auth {driver: true} and sends "emit" [[room, payload], ...]: the server emits each payload to
// its room (a robot on another server gets it through Redis) and acks the count.
// POST /blast {"tag", "robots": [...], "count", "rate"} makes this server's own code emit
// `count` distinct messages, message k to the room robots[k % robots.length] as {"m": tag, "n": k,
// "t": epoch ms at its emit}: rate 0 in chunks of 500 (the event loop turns between chunks),
// rate > 0 paced open loop (message k due k / rate s after the start); answers
// {"first_send_ms", "seconds"} once every emit is handed to the adapter (bench/app_send_bench.py).
// Usage: node server.js PORT REDIS_URL
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.argv[2]);
const url = process.argv[3];
const CHUNK = 500;
const now = () => performance.timeOrigin + performance.now();

async function blast(io, spec) {
  const rooms = spec.robots;
  const count = spec.count;
  const rate = spec.rate || 0;
  const started = performance.now();
  let firstSend = null;
  const emit = (k) => {
    const t = now();
    if (firstSend === null) firstSend = t;
    io.to(rooms[k % rooms.length]).emit("m", JSON.stringify({ m: spec.tag, n: k, t }));
  };
  let k = 0;
  while (k < count) {
    if (rate > 0) {
      const due = started + (k / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const elapsed = performance.now() - started;
      do emit(k++);
      while (k < count && (k / rate) * 1000 <= elapsed);
    } else {
      const end = Math.min(count, k + CHUNK);
      while (k < end) emit(k++);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return { first_send_ms: firstSend, seconds: (performance.now() - started) / 1000 };
}

async function main() {
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({ transports: ["websocket"], serveClient: false });
  const server = http.createServer((req, res) => {
    if (req.method !== "POST" || req.url !== "/blast") {
      res.writeHead(404).end();
      return;
    }
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", async () => {
      try {
        const result = await blast(io, JSON.parse(body));
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(result));
      } catch (err) {
        res.writeHead(500).end(String(err));
      }
    });
  });
  io.adapter(createAdapter(pub, sub));
  io.attach(server);
  io.on("connection", (socket) => {
    const auth = socket.handshake.auth || {};
    if (auth.robot) {
      socket.join(String(auth.robot));
    } else if (auth.driver) {
      socket.on("emit", (pairs, ack) => {
        for (const [room, payload] of pairs) io.to(room).emit("m", payload);
        if (typeof ack === "function") ack(pairs.length);
      });
    }
  });
  server.listen(port, "127.0.0.1", () => console.log("listening " + port));
  const stop = async () => {
    io.close();
    await Promise.allSettled([pub.quit(), sub.quit()]);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
