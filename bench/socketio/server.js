// One socket.io 4.8 server process with @socket.io/redis-adapter 8.3 (classic pub/sub).
// Robots connect with auth {robot: ID} and join the room ID. A driver connects with
// auth {driver: true} and sends "emit" [[room, payload], ...]: the server emits each payload to
// its room (a robot on another server gets it through Redis) and acks the count.
// Usage: node server.js PORT REDIS_URL
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.argv[2]);
const url = process.argv[3];

async function main() {
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({ transports: ["websocket"], serveClient: false });
  io.adapter(createAdapter(pub, sub));
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
  io.listen(port);
  console.log("listening " + port);
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
