import{a,b}from"./chunk-IVBPXYXK.js";import"./chunk-MR2SPORM.js";export{a as sanitizeMarkdownHtml,b as sanitizeOutputHtml};
