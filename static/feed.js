// A WebSocket that reconnects by itself with backoff, and reports its state.
import { ticketQuery } from "./auth.js";

export class Feed {
  constructor(path, { onMessage, onState, resumeQuery = () => "" }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onState = onState;
    this.resumeQuery = resumeQuery;
    this.delay = 500;
    this.closed = false;
    this.socket = null;
    this.timer = null;
    this.connect();
  }

  async url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = [this.resumeQuery(), await ticketQuery()].filter(Boolean).join("&");
    return `${scheme}//${location.host}${this.path}${query ? `?${query}` : ""}`;
  }

  async connect() {
    if (this.closed) return;
    this.onState(this.socket ? "reconnecting" : "connecting");
    let url;
    try {
      url = await this.url();
    } catch {
      this.retry();
      return;
    }
    if (this.closed) return;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.delay = 500;
      this.onState("live");
      this.keepAlive();
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type !== "pong") this.onMessage(message);
    });
    socket.addEventListener("close", () => {
      clearInterval(this.timer);
      if (this.closed || socket !== this.socket) return;
      this.retry();
    });
  }

  retry() {
    this.onState(this.delay > 4000 ? "offline" : "reconnecting");
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  // A text ping now and then: lets a proxy see traffic and the page notice a dead connection sooner.
  keepAlive() {
    clearInterval(this.timer);
    this.timer = setInterval(() => {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send("ping");
    }, 25000);
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    if (this.socket) this.socket.close(1000);
  }
}
