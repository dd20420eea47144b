// Sends events through the relay with the unmodified official @segment/analytics-node SDK,
// pointed at it by its host setting alone; prints the messageIds the SDK generated.
import { Analytics } from "@segment/analytics-node";

const [host, writeKey, count] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 10, flushInterval: 200, maxRetries: 3 });
const ids = [];
const sent = [];
for (let i = 0; i < Number(count); i++) {
  sent.push(
    new Promise((resolve, reject) => {
      analytics.track(
        { userId: "node-user", event: "Order Completed", properties: { revenue: i } },
        (err, ctx) => (err ? reject(err) : resolve(ids.push(ctx.event.messageId))),
      );
    }),
  );
}
await Promise.all(sent);
await analytics.closeAndFlush();
console.log(JSON.stringify(ids));
