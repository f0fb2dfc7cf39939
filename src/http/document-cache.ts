import type { DocumentNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { LRUCache } from 'lru-cache';

/** A parsed document's heap, per character of its source (measured on the introspection query: ~32). */
const HEAP_BYTES_PER_SOURCE_CHAR = 32;

/**
 * Parsed and validated documents, reused by every transport (yoga's own parser cache is turned off for this).
 * Unlike yoga's cache, which keeps up to 1,024 documents and parse errors of any size for an hour, this one
 * is bounded by the documents' estimated heap, and keeps a document only once it has passed validation and
 * the operation limits: a flood of distinct or invalid queries costs their parsing and nothing that stays.
 *
 * Keep it the last plugin that adds validation rules: a document's validation is remembered per set of rules
 * seen here.
 */
export function useValidatedDocumentCache(maxBytes: number): Plugin {
  const documents = new LRUCache<string, DocumentNode>({
    maxSize: Math.max(1, maxBytes),
    sizeCalculation: (_document, source) => Math.max(1, source.length * HEAP_BYTES_PER_SOURCE_CHAR),
  });
  /** Documents parsed but not yet validated: their source, to cache them under once they pass. */
  const sources = new WeakMap<DocumentNode, string>();
  /** Per set of rules (by name), the documents that passed them. */
  const passed = new Map<string, WeakSet<DocumentNode>>();
  const passedFor = (rules: readonly { name: string }[] | undefined) => {
    const key = rules?.map((rule) => rule.name).join(',') ?? '';
    let documentsThatPassed = passed.get(key);
    if (!documentsThatPassed) {
      documentsThatPassed = new WeakSet();
      passed.set(key, documentsThatPassed);
    }
    return documentsThatPassed;
  };

  return {
    onParse({ params, setParsedDocument }) {
      const source = typeof params.source === 'string' ? params.source : params.source.body;
      const document = documents.get(source);
      if (document) {
        setParsedDocument(document);
        return;
      }
      return ({ result }) => {
        if (result && !(result instanceof Error) && maxBytes > 0) sources.set(result, source);
      };
    },
    onValidate({ params: { documentAST, rules }, setResult }) {
      const documentsThatPassed = passedFor(rules);
      if (documentsThatPassed.has(documentAST)) {
        setResult([]);
        return;
      }
      return ({ valid }) => {
        if (!valid) return;
        documentsThatPassed.add(documentAST);
        const source = sources.get(documentAST);
        if (source !== undefined) documents.set(source, documentAST);
      };
    },
  };
}
