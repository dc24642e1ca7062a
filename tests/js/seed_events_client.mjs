// The seed's (000, "WebSocket Client Class") AxisorWebSocketClient, with only its TypeScript types
// removed (and the constructor's parameter properties written out), driven exactly as the seed's
// "Margin Guard Monitoring" example drives it. Prints one JSON line per event it handles.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
if (typeof globalThis.WebSocket === "undefined") globalThis.WebSocket = require("ws");

const ConnectionState = {
  CONNECTING: "connecting",
  CONNECTED: "connected",
  AUTHENTICATED: "authenticated",
  DISCONNECTED: "disconnected",
  ERROR: "error",
};

// ---- seed code (types stripped) -------------------------------------------------------------
class AxisorWebSocketClient {
  ws = null;
  reconnectAttempts = 0;
  maxReconnectAttempts = 5;
  reconnectDelay = 1000;
  eventHandlers = new Map();
  subscribedRooms = new Set();
  connectionState = ConnectionState.DISCONNECTED;

  constructor(url, token, options = {}) {
    this.url = url;
    this.token = token;
    this.options = options;
    this.maxReconnectAttempts = options.maxReconnectAttempts || 5;
    this.reconnectDelay = options.reconnectDelay || 1000;
  }

  connect() {
    return new Promise((resolve, reject) => {
      try {
        this.ws = new WebSocket(this.url);
        this.connectionState = ConnectionState.CONNECTING;

        this.ws.onopen = () => {
          this.connectionState = ConnectionState.CONNECTED;
          this.reconnectAttempts = 0;

          // Authenticate
          this.ws.send(JSON.stringify({
            type: 'auth',
            token: this.token
          }));
        };

        this.ws.onmessage = (event) => {
          this.handleMessage(event);
        };

        this.ws.onclose = (event) => {
          this.connectionState = ConnectionState.DISCONNECTED;
          this.handleReconnect();
        };

        this.ws.onerror = (error) => {
          this.connectionState = ConnectionState.ERROR;
          reject(error);
        };

        // Handle authentication response
        this.on('connection', (data) => {
          if (data.status === 'connected') {
            this.connectionState = ConnectionState.AUTHENTICATED;
            this.resubscribeToRooms();
            resolve();
          } else {
            reject(new Error('Authentication failed'));
          }
        });

      } catch (error) {
        reject(error);
      }
    });
  }

  handleMessage(event) {
    try {
      const message = JSON.parse(event.data);
      this.emit(message.type, message);
    } catch (error) {
      console.error('Failed to parse WebSocket message:', error);
    }
  }

  handleReconnect() {
    if (this.reconnectAttempts >= this.maxReconnectAttempts) {
      console.error('Max reconnection attempts reached');
      return;
    }

    this.reconnectAttempts++;
    const delay = this.reconnectDelay * Math.pow(2, this.reconnectAttempts - 1);

    setTimeout(() => {
      console.log(`Reconnecting... (attempt ${this.reconnectAttempts})`);
      this.connect();
    }, delay);
  }

  resubscribeToRooms() {
    this.subscribedRooms.forEach(room => {
      this.subscribe(room);
    });
  }

  // Event handling
  on(event, handler) {
    if (!this.eventHandlers.has(event)) {
      this.eventHandlers.set(event, new Set());
    }
    this.eventHandlers.get(event).add(handler);
  }

  off(event, handler) {
    const handlers = this.eventHandlers.get(event);
    if (handlers) {
      handlers.delete(handler);
    }
  }

  emit(event, data) {
    const handlers = this.eventHandlers.get(event);
    if (handlers) {
      handlers.forEach(handler => {
        try {
          handler(data);
        } catch (error) {
          console.error('Event handler error:', error);
        }
      });
    }
  }

  // Room management
  subscribe(channel) {
    if (this.ws && this.connectionState === ConnectionState.AUTHENTICATED) {
      this.ws.send(JSON.stringify({
        type: 'subscribe',
        channel
      }));
      this.subscribedRooms.add(channel);
    }
  }

  unsubscribe(channel) {
    if (this.ws && this.connectionState === ConnectionState.AUTHENTICATED) {
      this.ws.send(JSON.stringify({
        type: 'unsubscribe',
        channel
      }));
      this.subscribedRooms.delete(channel);
    }
  }

  // Utility methods
  send(data) {
    if (this.ws && this.connectionState === ConnectionState.AUTHENTICATED) {
      this.ws.send(JSON.stringify(data));
    }
  }

  disconnect() {
    if (this.ws) {
      this.ws.close();
      this.ws = null;
      this.connectionState = ConnectionState.DISCONNECTED;
    }
  }

  getConnectionState() {
    return this.connectionState;
  }
}
// ---- end of seed code ----------------------------------------------------------------------

const [url, token, example = "margin", seconds = "60"] = process.argv.slice(2);
const out = (obj) => console.log(JSON.stringify(obj));
const wsClient = new AxisorWebSocketClient(url, token);
wsClient.on("room_subscription", (data) => out({ handler: "room_subscription", message: data }));
await wsClient.connect();
out({ status: "connected" });
setTimeout(() => process.exit(3), Number(seconds) * 1000);

if (example === "market") {
  // The seed's "Market Data Streaming" example, with its chart calls replaced by printing.
  wsClient.subscribe('market:BTC_USD');

  wsClient.on('market_data_update', (data) => {
    out({ handler: "market_data_update", price: data.data.price, message: data });
  });

  wsClient.on('historical_data_update', (data) => {
    out({ handler: "historical_data_update", candles: data.data.candles.length });
  });
} else {
  // The seed's "Margin Guard Monitoring" example, with its UI calls replaced by printing.
  wsClient.subscribe('margin_guard');
  wsClient.subscribe('positions');

  wsClient.on('margin_guard_execution', (data) => {
    out({ handler: "margin_guard_execution", action: data.data.action, message: data });
  });

  wsClient.on('position_status_update', (data) => {
    out({ handler: "position_status_update", position: data.data.position, message: data });
  });

  wsClient.on('auto_close_execution', (data) => {
    out({ handler: "auto_close_execution", position: data.data.position, message: data });
    wsClient.maxReconnectAttempts = 0;
    wsClient.disconnect();
    process.exit(0);
  });
}
