#!/usr/bin/env node
// A Node.js client of the securechat wire API, with nothing from securechat
// itself: only the certificates `securechat quickstart` writes and
// protos/securechat/v1/chat.proto, loaded at run time by @grpc/proto-loader.
// It prints the same lines as the Go and Python examples (see ../README.md).
//
//   npm ci --prefix examples/node
//   node examples/node/client.js --dir DIR --target localhost:50051
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

// The trailing-metadata key that carries a refusal's machine-readable
// reason. Clients act on it, never on the human message.
const REFUSAL_KEY = "securechat-refusal";
// The metadata key that asks the server for a room's events after an id.
const LAST_EVENT_ID_KEY = "last-event-id";
const CALL_TIMEOUT_MS = 20000;
const PROTOS = path.resolve(__dirname, "..", "..", "protos");

function fail(message) {
  process.stderr.write(`securechat-example: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { dir: "", target: "localhost:50051", room: "" };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i].replace(/^--?/, "");
    const [name, inline] = flag.split("=", 2);
    if (!(name in args)) fail(`unknown option ${argv[i]}: use --dir DIR [--target HOST:PORT] [--room ROOM]`);
    args[name] = inline !== undefined ? inline : argv[++i];
    if (args[name] === undefined) fail(`${argv[i - 1]} needs a value`);
  }
  if (!args.dir) fail("--dir is required: pass a `securechat quickstart --dir DIR` directory");
  if (!args.room) args.room = `examples-node-${randomId().slice(0, 8)}`;
  return args;
}

function randomId() {
  return crypto.randomBytes(16).toString("hex");
}

function read(file) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    return fail(`${file}: ${err.code || err.message}. Run 'securechat quickstart --dir DIR' and pass --dir DIR`);
  }
}

function loadService() {
  const definition = protoLoader.loadSync("securechat/v1/chat.proto", {
    includeDirs: [PROTOS],
    keepCase: true, // client_msg_id, sent_at_unix_ms, as in the .proto
    longs: String,
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).securechat.v1.ChatService;
}

function codeName(code) {
  return grpc.status[code] || String(code);
}

// What a client does about each refusal reason (the table in the top-level
// README's "Wire API"); an unknown one falls back to the status code.
const ACTIONS = {
  "fix-the-request": ["invalid-room", "text-too-long", "bad-resume-id"], // resending fails the same way
  "back-off-and-retry": ["rate-limited", "too-many-rooms", "too-many-streams", "too-many-connections"],
  "reconnect-with-last-event-id": ["slow-consumer", "feed-lost", "shutting-down", "stream-broken"], // nothing is lost
  "resend-with-the-same-client-msg-id": ["broker-unavailable"], // the message was not accepted
  "resume-from-securechat-resume-from": ["history-gone"],
  stop: ["no-certificate", "bad-certificate", "revoked", "not-allowed"], // only a new certificate or permission helps
};

function actionFor(reason) {
  if (!reason) return "none-given";
  const found = Object.keys(ACTIONS).find((action) => ACTIONS[action].includes(reason));
  return found || "unknown-reason";
}

const deadline = () => new Date(Date.now() + CALL_TIMEOUT_MS);

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

const isMessage = (ev, sender, text) => ev.kind === "MESSAGE" && ev.sender === sender && ev.text === text;

// One Chat stream: events are queued as they arrive and taken with until().
class ChatSession {
  constructor(client, lastEventId) {
    const metadata = new grpc.Metadata();
    if (lastEventId) metadata.set(LAST_EVENT_ID_KEY, lastEventId);
    this.events = [];
    this.ended = null; // the error that ended the stream (its .metadata: the trailers)
    this.waiter = null;
    this.call = client.Chat(metadata, { deadline: deadline() });
    this.call.on("data", (ev) => {
      this.events.push(ev);
      this.wake();
    });
    this.call.on("error", (err) => {
      this.ended = err;
      this.wake();
    });
    this.call.on("end", () => {
      if (!this.ended) this.ended = Object.assign(new Error("the server ended the stream"), { code: grpc.status.OK });
      this.wake();
    });
  }

  wake() {
    if (this.waiter) {
      const resolve = this.waiter;
      this.waiter = null;
      resolve();
    }
  }

  send(room, text, clientMsgId) {
    this.call.write({ room, text, client_msg_id: clientMsgId || "" });
  }

  // Resolves with the first event that matches, handing earlier ones to seen;
  // rejects with the status error if the stream ends first.
  async until(match, seen = () => {}) {
    for (;;) {
      while (this.events.length) {
        const ev = this.events.shift();
        if (match(ev)) return ev;
        seen(ev);
      }
      if (this.ended) throw this.ended;
      await new Promise((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  // Post an empty message (joins without posting) and wait for our own JOIN,
  // so the membership is in place before anyone posts.
  join(room, me, seen) {
    this.send(room, "", "");
    return this.until((ev) => ev.kind === "JOIN" && ev.sender === me && ev.room === room, seen);
  }

  close() {
    this.call.end();
    this.call.cancel();
  }
}

async function bobSays(bob, room, text) {
  const chat = new ChatSession(bob);
  chat.send(room, text, randomId());
  await chat.until((ev) => isMessage(ev, "bob", text));
  chat.close();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const certs = path.join(args.dir, "certs");
  const ChatService = loadService();
  const ca = read(path.join(certs, "ca.pem"));
  const as = (name) =>
    new ChatService(
      args.target,
      grpc.credentials.createSsl(ca, read(path.join(certs, `${name}-key.pem`)), read(path.join(certs, `${name}.pem`))),
    );
  const alice = as("alice");
  const bob = as("bob");

  // Unary calls: the server names us from our certificate, not the payload.
  const reply = await unary(alice, "SayHello", { name: "mallory" });
  console.log(`hello: ${reply.message}`);
  const me = await unary(alice, "WhoAmI", {});
  console.log(`whoami: name=${me.name} serial=${me.serial} not_after=${me.not_after}`);

  // Chat: join, send with a client_msg_id, read our echo (the
  // acknowledgement) and another member's message.
  const room = args.room;
  let chat = new ChatSession(alice);
  await chat.join(room, "alice");
  console.log(`chat: joined room=${room}`);
  const text = "hello from node";
  const msgId = randomId();
  chat.send(room, text, msgId);
  const echo = await chat.until((ev) => isMessage(ev, "alice", text));
  console.log(`chat: echo id=${echo.id} sender=${echo.sender} client_msg_id=${msgId} text=${echo.text}`);

  await bobSays(bob, room, "hello from bob (node)");
  const other = await chat.until((ev) => isMessage(ev, "bob", "hello from bob (node)"));
  console.log(`chat: other id=${other.id} sender=${other.sender} text=${other.text}`);
  const lastSeen = other.id;

  // Reconnect: drop the stream, miss a message, resume with last-event-id.
  chat.close();
  await bobSays(bob, room, "while you were away (node)");
  chat = new ChatSession(alice, lastSeen);
  let replayed = null;
  await chat.join(room, "alice", (ev) => {
    if (isMessage(ev, "bob", "while you were away (node)")) replayed = ev;
  });
  if (!replayed) fail(`resume: the server did not replay the message sent after id ${lastSeen}`);
  console.log(
    `resume: last-event-id=${lastSeen} replayed id=${replayed.id} sender=${replayed.sender} text=${replayed.text}`,
  );

  // Unsure whether a send landed (the stream broke)? Send it again with the
  // same client_msg_id: the server acknowledges it with the original event
  // and delivers it to nobody twice.
  chat.send(room, text, msgId);
  const again = await chat.until((ev) => isMessage(ev, "alice", text));
  console.log(`retry: client_msg_id=${msgId} id=${again.id} first_id=${echo.id} same_event=${again.id === echo.id}`);
  chat.close();

  // A refusal: the status says what happened, the trailing metadata says
  // why, as data a program can act on.
  chat = new ChatSession(alice);
  chat.send("bad room!", "", "");
  let refused = null;
  try {
    await chat.until(() => false);
  } catch (err) {
    refused = err;
  }
  const reason = String((refused.metadata && refused.metadata.get(REFUSAL_KEY)[0]) || "");
  console.log(
    `refusal: code=${codeName(refused.code)} reason=${reason || "(none)"} action=${actionFor(reason)} message=${refused.details}`,
  );

  // Without a client certificate the server refuses the TLS handshake.
  const anonymous = new ChatService(args.target, grpc.credentials.createSsl(ca));
  try {
    await unary(anonymous, "SayHello", { name: "mallory" });
    fail("SayHello without a client certificate succeeded; the server must require one");
  } catch (err) {
    console.log(`no-client-cert: code=${codeName(err.code)}`);
  }
  for (const client of [alice, bob, anonymous]) client.close();
  console.log("done");
}

main().catch((err) => {
  fail(err.code !== undefined ? `${codeName(err.code)} ${err.details}` : err.stack || String(err));
});
