"""The seed's Python order-updates client (seed 004, "Python Implementation"), verbatim.

Only change: the URL. The seed hard-codes ``wss://order-updates.arrow.trade?...``; here the base
URL is a constructor argument (default: the seed's) so tests can point it at
``ws://127.0.0.1:{port}/ws/orders``. Everything else -- threads, the Timer heartbeat that sends
'PONG', the read timeout, the reconnection -- is as printed, quotes and prints included.
"""

# fmt: off
# ruff: noqa: I001 -- the seed's import order, kept as printed
import websocket
import json
import time
from threading import Thread, Timer

class OrderUpdatesClient:
    def __init__(self, session, token, base_url="wss://order-updates.arrow.trade"):
        self.session = session
        self.token = token
        self.url = f"{base_url}?session={session}&token={token}"
        self.ws = None
        self.order_handlers = {}
        self.connection_handlers = []
        self.reconnect_count = 0
        self.max_reconnect = 300
        self.reconnect_delay = 1
        self.last_read = time.time()
        self.read_timeout = 30
        self.pinger = None
        self.read_timer = None

    def connect(self):
        self.ws = websocket.WebSocketApp(
            self.url,
            on_message=self.on_message,
            on_error=self.on_error,
            on_close=self.on_close,
            on_open=self.on_open
        )
        wst = Thread(target=self.ws.run_forever)
        wst.daemon = True
        wst.start()

    def on_open(self, ws):
        print('Connected to order updates')
        self.reconnect_count = 0
        self.reconnect_delay = 1
        self.last_read = time.time()
        # Start heartbeat
        self.start_heartbeat()
        # Notify connection handlers
        for handler in self.connection_handlers:
            handler('connected')

    def on_message(self, ws, message):
        self.last_read = time.time()
        try:
            update = json.loads(message)
            if 'updateType' in update:
                self.handle_order_update(update)
        except json.JSONDecodeError:
            pass

    def on_error(self, ws, error):
        print(f'WebSocket error: {error}')

    def on_close(self, ws, close_status_code, close_msg):
        print('Connection closed')
        self.stop_heartbeat()
        # Notify connection handlers
        for handler in self.connection_handlers:
            handler('disconnected')
        # Attempt reconnection
        self.reconnect()

    def start_heartbeat(self):
        def send_ping():
            if self.ws and self.ws.sock and self.ws.sock.connected:
                self.ws.send('PONG')
            self.pinger = Timer(30, send_ping)
            self.pinger.start()

        def check_timeout():
            if time.time() - self.last_read > self.read_timeout:
                print('Read timeout, reconnecting...')
                self.ws.close()
            else:
                self.read_timer = Timer(self.read_timeout, check_timeout)
                self.read_timer.start()

        send_ping()
        check_timeout()

    def stop_heartbeat(self):
        if self.pinger:
            self.pinger.cancel()
        if self.read_timer:
            self.read_timer.cancel()

    def reconnect(self):
        if self.reconnect_count >= self.max_reconnect:
            print('Max reconnection attempts reached')
            return
        self.reconnect_count += 1
        delay = min(2 ** self.reconnect_count, 10)
        print(f'Reconnecting in {delay} seconds (attempt {self.reconnect_count})...')
        for handler in self.connection_handlers:
            handler('reconnecting')
        Timer(delay, self.connect).start()

    def on_order_update(self, order_id, callback):
        if order_id not in self.order_handlers:
            self.order_handlers[order_id] = []
        self.order_handlers[order_id].append(callback)

    def on_all_orders(self, callback):
        self.on_order_update('*', callback)

    def on_connection_status(self, callback):
        self.connection_handlers.append(callback)

    def handle_order_update(self, update):
        order_id = update.get('orderId')
        # Call specific order handlers
        if order_id in self.order_handlers:
            for handler in self.order_handlers[order_id]:
                handler(update)
        # Call wildcard handlers
        if '*' in self.order_handlers:
            for handler in self.order_handlers['*']:
                handler(update)

    def disconnect(self):
        if self.ws:
            self.stop_heartbeat()
            self.ws.close()

# Usage
def handle_order(update):
    print(f"Order update: {update}")
    if update['orderStatus'] == 'COMPLETE':
        print(f"Order {update['orderId']} executed at {update['averagePrice']}")

def handle_connection(status):
    print(f"Connection status: {status}")
