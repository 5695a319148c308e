/**
 * The change feed's stream read as events: `serverEvents` turns the body of
 * `GET /v1/changes` (server-sent events) into `{event, id, data}` objects.
 *
 * Imports nothing at the top level, so it runs unchanged in browsers, Node and workerd.
 */

/** @import { ServerEvent } from '../index.js' */

/**
 * The events of a server-sent event stream (the body of `GET /v1/changes`), in order:
 * `{event, id, data}` with `data` parsed as JSON (`null` if it is not JSON). Ends with the
 * stream.
 *
 * @param {ReadableStream<Uint8Array<ArrayBuffer>>} body
 * @returns {AsyncGenerator<ServerEvent>}
 */
export async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll('\r\n', '\n');
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        let id = '';
        const data = [];
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':');
          if (colon === 0) continue;
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = text;
          else if (field === 'id') id = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length === 0) continue;
        let parsed = null;
        try {
          parsed = JSON.parse(data.join('\n'));
        } catch {
          // Not JSON: given as null.
        }
        yield { event, id, data: parsed };
      }
    }
  } finally {
    // A reader that stops early closes the stream (and its connection).
    await reader.cancel().catch(() => {});
  }
}
