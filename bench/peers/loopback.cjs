// Preloaded into the Portkey gateway (node -r): every server it starts listens on
// 127.0.0.1 only. Its start-up script binds all interfaces and has no option for that.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === "object") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (typeof args[0] === "number" || typeof args[0] === "string") {
    if (typeof args[1] === "function") {
      args.splice(1, 0, "127.0.0.1");
    } else {
      args[1] = "127.0.0.1";
    }
  }
  return listen.apply(this, args);
};
