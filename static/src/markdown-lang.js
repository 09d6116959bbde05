// The markdown editing mode (with the HTML, CSS and JavaScript modes it nests): fetched by
// codemirror.js when a markdown cell's source is first edited.
export { markdown } from '@codemirror/lang-markdown'
