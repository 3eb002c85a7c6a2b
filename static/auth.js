// The viewer token: asked for once when the service wants one, kept for this tab's session only
// (sessionStorage), sent as a bearer token and traded for a single-use ticket before each WebSocket.
const KEY = "orchestrator.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

async function whoami(candidate) {
  const headers = candidate ? { Authorization: `Bearer ${candidate}` } : {};
  const response = await fetch("/api/whoami", { headers });
  return response.json();
}

// A ticket for the next WebSocket, or "" when the service wants no token.
export async function ticketQuery() {
  const current = token();
  if (!current) return "";
  const response = await fetch("/api/ws-ticket", { method: "POST", headers: { Authorization: `Bearer ${current}` } });
  if (response.status === 401) {
    forget();
    location.reload();
    return "";
  }
  if (!response.ok) throw new Error(`ws-ticket: HTTP ${response.status}`);
  const { ticket } = await response.json();
  return `ticket=${encodeURIComponent(ticket)}`;
}

// Resolves once the page may show data: at once without authentication, else after a usable token.
export async function signIn() {
  const status = await whoami(token());
  if (!status.authRequired || (status.authenticated && status.role !== "client")) {
    document.getElementById("login").hidden = true;
    document.querySelector("main").hidden = false;
    return;
  }
  forget();
  const form = document.getElementById("login");
  const input = document.getElementById("login-token");
  const error = document.getElementById("login-error");
  document.querySelector("main").hidden = true;
  form.hidden = false;
  input.focus();
  await new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const candidate = input.value.trim();
      const answer = await whoami(candidate);
      if (!answer.authenticated) {
        error.textContent = `Token refused: ${answer.reason || "not valid"}`;
        return;
      }
      if (answer.role === "client") {
        error.textContent = "A client token cannot show the dashboard: use a viewer or admin token.";
        return;
      }
      sessionStorage.setItem(KEY, candidate);
      input.value = "";
      form.hidden = true;
      document.querySelector("main").hidden = false;
      resolve();
    });
  });
}
