// The Express side of Herald's webhook ingest benchmark (docs/benchmarks.md,
// scripts/bench-inbox.sh): the smallest server that does what a Twilio inbound-message webhook
// needs. It checks X-Twilio-Signature with the twilio package's validateRequest over the URL
// Twilio requested (PUBLIC_URL + the path) and the parsed form, checks the AccountSid, stores
// the message in its own table of the same PostgreSQL (a provider retry is stored once) and
// answers empty TwiML, as Herald does.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/herald_bench_inbox \
//   TWILIO_AUTH_TOKEN=… TWILIO_ACCOUNT_SID=AC… PORT=3000 PUBLIC_URL=http://127.0.0.1:3000 \
//   node bench/express-webhook/server.mjs
//
// Options (environment): DATABASE_URL, TWILIO_AUTH_TOKEN, TWILIO_ACCOUNT_SID, PORT (3000),
// HOST (127.0.0.1), PUBLIC_URL (http://HOST:PORT), POOL (10 connections, Herald's default
// db_pool_size). It creates its table, express_messages, when missing; it prints
// "listening on …" once it accepts requests.
import express from 'express';
import pg from 'pg';
import twilio from 'twilio';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
};

const databaseUrl = env('DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/herald_bench_inbox');
const authToken = env('TWILIO_AUTH_TOKEN');
const accountSid = env('TWILIO_ACCOUNT_SID');
const host = env('HOST', '127.0.0.1');
const port = Number(env('PORT', '3000'));
const publicUrl = env('PUBLIC_URL', `http://${host}:${port}`).replace(/\/$/, '');
const pool = new pg.Pool({ connectionString: databaseUrl, max: Number(env('POOL', '10')) });

await pool.query(`
  CREATE TABLE IF NOT EXISTS express_messages (
    id BIGSERIAL PRIMARY KEY,
    channel_id BIGINT NOT NULL,
    message_sid TEXT NOT NULL,
    contact TEXT NOT NULL,
    profile_name TEXT,
    body TEXT,
    num_media INT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (channel_id, message_sid)
  )`);

const app = express();
app.disable('x-powered-by');

app.post('/webhooks/twilio/:id', express.urlencoded({ extended: false }), async (req, res) => {
  const signature = req.get('X-Twilio-Signature') ?? '';
  if (!twilio.validateRequest(authToken, signature, publicUrl + req.originalUrl, req.body)) {
    return res.status(403).json({ code: 'invalid_signature' });
  }
  const form = req.body;
  if (form.AccountSid !== accountSid || !form.From || !form.MessageSid) {
    return res.status(422).json({ code: 'invalid' });
  }
  try {
    await pool.query(
      `INSERT INTO express_messages (channel_id, message_sid, contact, profile_name, body, num_media)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel_id, message_sid) DO NOTHING`,
      [Number(req.params.id), form.MessageSid, form.From, form.ProfileName || null,
        form.Body || null, Number(form.NumMedia ?? 0)],
    );
  } catch (e) {
    console.error(e.message);
    return res.status(503).json({ code: 'unavailable' });
  }
  res.type('text/xml').send('<Response/>');
});

const server = app.listen(port, host, () => console.log(`listening on ${publicUrl}`));
const stop = () => server.close(() => pool.end().then(() => process.exit(0)));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
