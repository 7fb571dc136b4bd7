// What the browser test files share: headless Chromium with WebGPU on SwiftShader, the
// native engine's reply to compare with, and a load-and-chat round trip in the page.

import { execFileSync } from 'node:child_process';

// Launches headless Chromium (CHROMIUM, default /usr/bin/chromium) with a profile in
// `userData`; returns the playwright context.
export function launch(chromium, userData) {
  return chromium.launchPersistentContext(userData, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run',
      // WebGPU on SwiftShader, Chromium's CPU implementation of Vulkan: real WebGPU
      // without a GPU.
      '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
      '--use-webgpu-adapter=swiftshader',
    ],
  });
}

// The native engine's greedy reply (`akari generate` of the binary `bin`), as the browser
// must reproduce it.
export function nativeReply(bin, model, prompt, maxTokens, extra = []) {
  const out = execFileSync(bin, [
    'generate', model, '--prompt', prompt, '--max-tokens', String(maxTokens), '--json', ...extra,
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop()).text;
}

// Loads `source` in `page` and generates a reply to each conversation (from an empty cache
// each time); returns what the page saw, the first reply's fields at the top level.
export async function loadAndChat(page, source, options, messages, chatOptions, more = []) {
  return page.evaluate(async ({ source, options, conversations, chatOptions }) => {
    const stages = [];
    const engine = await window.akari.load(source, {
      ...options,
      progress: (p) => stages.push(p.stage),
    });
    const replies = [];
    for (const messages of conversations) {
      await engine.reset();
      let answer = '';
      let think = '';
      let done = null;
      for await (const c of engine.chat(messages, chatOptions)) {
        if (c.kind === 'answer') answer += c.text;
        else if (c.kind === 'think') think += c.text;
        else done = c.stats;
      }
      replies.push({ answer, think, done });
    }
    const info = engine.info;
    await engine.unload();
    return { stages: [...new Set(stages)], ...replies[0], replies, info };
  }, { source, options, conversations: [messages, ...more], chatOptions });
}
