import { type Plugin, shouldRenderGraphiQL } from 'graphql-yoga';
import { CompressedAsset } from './compressed-asset.js';

/**
 * GraphiQL at the GraphQL endpoint, for a browser: yoga's page with the walkthrough below, compressed (see
 * CompressedAsset). The page is large, so it is rendered only when someone first opens GraphiQL, then kept.
 * Its scripts come from the package, not yoga's default CDN, so it works on a machine without internet access.
 */
export function useGraphiQLPage(options: {
  endpoint: string;
  /** Filled into GraphiQL's headers in development mode. */
  developmentToken: string | undefined;
  /** Where the built-in simulator serves sample inputs, for the walkthrough's CreateTask. */
  samplesUrl?: string | undefined;
}): Plugin {
  const page = new CompressedAsset(async () => Buffer.from(await renderPage(options)), {
    'content-type': 'text/html; charset=utf-8',
    // It may carry a development token.
    'cache-control': 'no-store',
  });
  return {
    onRequest({ request, url, endResponse }) {
      if (url.pathname.replace(/\/$/, '') !== options.endpoint || !shouldRenderGraphiQL(request)) return;
      return page.respond(request).then(endResponse);
    },
  };
}

/** Stands in the served page for the idempotency key its script draws on every load. */
const KEY_PLACEHOLDER = 'walkthrough-PAGE-LOAD';
/** Where yoga's page hands its options to GraphiQL; the walkthrough's script steps in there. */
const RENDER_CALL = 'YogaGraphiQL.renderYogaGraphiQL(';
const ROOT = '<div id="root"></div>';

/**
 * Every load of the page gets a fresh idempotency key, in the walkthrough and in the tabs GraphiQL kept from
 * earlier loads (it restores them from localStorage over the default): re-running CreateTask makes a new task
 * with live updates to watch, instead of answering with the finished one. getRandomValues, not randomUUID:
 * it works on plain http off localhost too.
 */
const freshKeyScript = `<script>
  function renderWalkthrough(root, options) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const key = 'walkthrough-' + Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
    const earlier = /walkthrough-(?:[0-9a-f]{32}|PAGE-LOAD)/g;
    options.defaultQuery = options.defaultQuery.replace(earlier, key);
    try {
      for (const name of ['graphiql:tabState', 'graphiql:query']) {
        const stored = localStorage.getItem(name);
        if (stored) localStorage.setItem(name, stored.replace(earlier, key));
      }
    } catch {
      // No storage (a private window may refuse it): GraphiQL starts from the default then.
    }
    return YogaGraphiQL.renderYogaGraphiQL(root, options);
  }
</script>`;

async function renderPage({
  developmentToken,
  samplesUrl,
}: {
  developmentToken: string | undefined;
  samplesUrl?: string | undefined;
}): Promise<string> {
  const { renderGraphiQL } = await import('@graphql-yoga/render-graphiql');
  const html = renderGraphiQL({
    title: 'avatar-gateway',
    defaultQuery: walkthrough(KEY_PLACEHOLDER, samplesUrl),
    subscriptionsProtocol: 'SSE',
    ...(developmentToken
      ? { headers: JSON.stringify({ Authorization: `Bearer ${developmentToken}` }, null, 2) }
      : {}),
  });
  if (!html.includes(RENDER_CALL) || !html.includes(ROOT)) {
    throw new Error('GraphiQL page: yoga changed its template; the walkthrough cannot draw fresh keys');
  }
  // The call first: the script put in next makes that same call itself.
  return html.replace(RENDER_CALL, 'renderWalkthrough(').replace(ROOT, `${ROOT}\n${freshKeyScript}`);
}

/**
 * With the built-in simulator the inputs are its samples, served by this gateway, so CreateTask passes the
 * check of URL inputs on a machine without internet; else placeholders to replace.
 */
const walkthrough = (
  idempotencyKey: string,
  samplesUrl: string | undefined,
) => `# Welcome to avatar-gateway. Your development token is already in the Headers tab.
# 1. Run CreateTask. 2. Copy the task id into WatchTask's variables and run it: the states stream in live.
# Running CreateTask again with the same idempotencyKey answers with the same task; each page load draws a new key.

mutation CreateTask {
  createAvatarTask(input: {
    imageUrl: "${samplesUrl ? `${samplesUrl}/face.png` : 'https://example.com/face.png'}"
    audioUrl: "${samplesUrl ? `${samplesUrl}/voice.wav` : 'https://example.com/voice.mp3'}"
    prompt: "A friendly presenter, looking at the camera"
    idempotencyKey: "${idempotencyKey}"
  }) {
    __typename
    ... on CreateAvatarTaskSuccess { task { id state upstreamTaskId estimatedCredits } }
    ... on Error { code message }
    ... on InvalidInputError { field }
  }
}

subscription WatchTask($id: ID) {
  avatarTaskUpdated(id: $id) { id state version videoUrl failure { code message } }
}

query MyTasks {
  viewer { id }
  avatarTasks(first: 10) {
    edges { node { id state videoUrl createdAt events { state source at } } }
    pageInfo { hasNextPage endCursor }
  }
}
`;
